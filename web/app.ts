/**
 * The live page: one user's runs, workers and inbox, subscribed through the
 * official Convex client. `?convex=<deployment URL>&user=<user id>`; the
 * token comes from the app backend that serves this page (`/token`), and
 * the client fetches a fresh one before each expires.
 */
import { ConvexClient } from "convex/browser";
import { api } from "../convex/_generated/api";

const params = new URLSearchParams(location.search);
const convexUrl = params.get("convex") ?? "";
const user = params.get("user") ?? "";
const $ = (id: string) => document.getElementById(id)!;

let updates = 0;
/** Last JSON seen per row, to flash the rows that changed. */
const lastSeen = new Map<string, string>();

function noteUpdate() {
  updates++;
  $("updates").textContent = String(updates);
  $("last").textContent = new Date().toLocaleTimeString();
  document.body.dataset.updates = String(updates);
}

function cell(tr: HTMLTableRowElement, text: unknown, cls?: string) {
  const td = tr.insertCell();
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (cls) td.className = cls;
}

function rows(tbodyId: string, docs: any[], columns: (d: any) => [unknown, string?][]) {
  const tbody = $(tbodyId) as HTMLTableSectionElement;
  tbody.replaceChildren();
  if (docs.length === 0) {
    const tr = tbody.insertRow();
    const td = tr.insertCell();
    td.colSpan = 7;
    td.className = "empty";
    td.textContent = "nothing yet";
  }
  for (const d of docs) {
    const tr = tbody.insertRow();
    tr.dataset.key = d.key;
    const id = `${tbodyId}/${d.key}`;
    const json = JSON.stringify(d);
    if (lastSeen.has(id) && lastSeen.get(id) !== json) tr.className = "changed";
    lastSeen.set(id, json);
    for (const [text, cls] of columns(d)) cell(tr, text, cls);
  }
  $(`${tbodyId}-count`).textContent = String(docs.length);
}

function start() {
  $("user").textContent = user || "(no user)";
  if (!convexUrl || !user) {
    $("conn").textContent = "give ?convex=<url>&user=<id>";
    $("conn").className = "pill bad";
    return;
  }
  const client = new ConvexClient(convexUrl);
  client.setAuth(
    async () => {
      const res = await fetch(`/token?sub=${encodeURIComponent(user)}`);
      return res.ok ? ((await res.json()).token as string) : null;
    },
    (ok) => {
      $("auth").textContent = ok ? `auth: ${user}` : "auth: refused";
      $("auth").className = ok ? "pill ok" : "pill bad";
    },
  );
  client.onUpdate(api.runs.list, { limit: 20 }, (runs) => {
    noteUpdate();
    rows("runs", runs, (r) => [
      [r.runId],
      [r.title],
      [r.status, `status-${r.status}`],
      [r.stepCount],
      [`${r.inputTokens} / ${r.outputTokens}`],
      [r.eventCount],
      [r.lastEventType],
    ]);
  });
  client.onUpdate(api.workers.list, { limit: 20 }, (workers) => {
    noteUpdate();
    rows("workers", workers, (w) => [
      [w.workerId],
      [w.status, `status-${w.status}`],
      [w.host],
      [w.heartbeatCount],
      [w.lastEventType],
    ]);
  });
  client.onUpdate(api.inbox.get, { userId: user }, (box) => {
    noteUpdate();
    const ul = $("inbox");
    ul.replaceChildren();
    $("unread").textContent = `${box?.unreadCount ?? 0} unread`;
    for (const item of box?.items.slice(-10).reverse() ?? []) {
      const li = document.createElement("li");
      li.textContent = item.title;
      if (!item.read) li.className = "unread";
      ul.append(li);
    }
    if (!box) ul.innerHTML = '<li class="empty">no notifications yet</li>';
  });
  client.subscribeToConnectionState((s) => {
    $("conn").textContent = s.isWebSocketConnected ? "connected" : "reconnecting…";
    $("conn").className = s.isWebSocketConnected ? "pill ok" : "pill bad";
  });
}

start();
