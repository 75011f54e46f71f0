#!/usr/bin/env python3
"""Shape of the Rust sources, for the structure issue's before/after figures:
functions over 120 lines, functions with more than 7 parameters, `pub`
items (not `pub(crate)`), and the module cycles among `crate::` imports.
Approximate (a brace counter that skips strings and comments), but the same
counter before and after. Usage: scripts/code-stats.py [src]"""
import os, re, sys
from collections import defaultdict

root = sys.argv[1] if len(sys.argv) > 1 else "src"

def strip(text):
    # blank out comments, strings and char literals, keeping line structure
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i)); i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == 'r' and re.match(r'r#*"', text[i:i+10]) and (i == 0 or not (text[i-1].isalnum() or text[i-1] == '_')):
            m = re.match(r'r(#*)"', text[i:])
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            j = n if j < 0 else j + len(end)
            out.append(re.sub(r"[^\n]", " ", text[i:j])); i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j+1])); i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i+4]) or text.startswith("'\\u{", i):
            j = text.find("'", i + 1)
            out.append(" " * (j - i + 1)); i = j + 1
        else:
            out.append(c); i += 1
    return "".join(out)

long_fns, many_params, pub_items = [], [], 0
imports = defaultdict(set)
mods = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith(".rs"):
            continue
        p = os.path.join(dp, f)
        rel = os.path.relpath(p, root)[:-3]
        mod = rel.replace(os.sep, "::")
        mod = re.sub(r"(::)?mod$", "", mod)
        if mod in ("lib", "main"):
            mod = ""
        raw = open(p).read()
        if rel.endswith("tests"):
            continue  # a `#[cfg(test)] mod tests;` file
        s = strip(raw)
        # test modules do not count
        tm = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", s)
        body = s[: tm.start()] if tm else s
        pub_items += len(re.findall(r"(?m)^\s*pub\s+(?:async\s+|const\s+|unsafe\s+)*(?:fn|struct|enum|trait|type|const|static|mod|use)\b", body))
        for m in re.finditer(r"\bfn\s+(\w+)\s*(<[^{;]*?>)?\s*\(", body):
            # parameters
            j, depth = m.end(), 1
            while j < len(body) and depth:
                depth += {"(": 1, ")": -1}.get(body[j], 0); j += 1
            params = body[m.end(): j - 1]
            d, cnt, cur = 0, 0, ""
            for ch in params:
                if ch in "<([{": d += 1
                if ch in ">)]}": d -= 1
                if ch == "," and d == 0:
                    cnt += bool(cur.strip()); cur = ""
                else:
                    cur += ch
            cnt += bool(cur.strip())
            if re.match(r"\s*&?\s*(mut\s+)?(\'\w+\s+)?(mut\s+)?self\b", params):
                cnt -= 1
            # body
            k = body.find("{", j)
            semi = body.find(";", j)
            if k < 0 or (0 <= semi < k):
                continue
            depth, e = 1, k + 1
            while e < len(body) and depth:
                depth += {"{": 1, "}": -1}.get(body[e], 0); e += 1
            lines = body[k:e].count("\n") + 1
            line_no = body[: m.start()].count("\n") + 1
            where = f"{p}:{line_no} {m.group(1)}"
            if lines > 120: long_fns.append((lines, where))
            if cnt > 7: many_params.append((cnt, where))
        parent = mod.rsplit("::", 1)[0] if "::" in mod else ""
        if f == "mod.rs":
            parent = mod.rsplit("::", 1)[0] if "::" in mod else ""
        for m in re.finditer(r"\b(crate|super)::((?:\w+::)*)(\{[^}]*\}|\w+)", body):
            base = m.group(2).rstrip(":")
            if m.group(1) == "super":
                base = "::".join(x for x in (parent, base) if x)
            leaves = [m.group(3)] if not m.group(3).startswith("{") else re.findall(r"(\w+(?:::\w+)*)", m.group(3)[1:-1])
            for leaf in leaves:
                imports[mod].add("::".join(x for x in (base, leaf) if x))
        mods[mod] = p

known = set(mods)
def owner(path):
    parts = path.split("::")
    for i in range(len(parts), 0, -1):
        c = "::".join(parts[:i])
        if c in known: return c
    return None
graph = defaultdict(set)
for m, paths in imports.items():
    for pth in paths:
        o = owner(pth)
        if o is not None and o != m and not m.startswith(o + "::") and not o.startswith(m + "::") if m else False:
            graph[m].add(o)
# strongly connected components (Tarjan)
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
def sc(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
    for w in graph[v]:
        if w not in index:
            sc(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop(); on.discard(w); comp.append(w)
            if w == v: break
        if len(comp) > 1: sccs.append(sorted(comp))
sys.setrecursionlimit(10000)
for v in list(graph):
    if v not in index: sc(v)

print(f"functions over 120 lines: {len(long_fns)}")
for l, w in sorted(long_fns, reverse=True): print(f"  {l:4d} {w}")
print(f"functions with more than 7 parameters: {len(many_params)}")
for c, w in sorted(many_params, reverse=True): print(f"  {c:4d} {w}")
print(f"pub items (outside test modules): {pub_items}")
print(f"module cycles (strongly connected groups of modules): {len(sccs)}")
for c in sccs: print("  " + " <-> ".join(c))
