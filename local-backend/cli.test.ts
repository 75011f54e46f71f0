// @vitest-environment node
// The command line keeps the admin key out of process arguments and the backend on loopback.
import { expect, test } from "vitest";
import { createAuthenticator } from "./auth";
import { parseCli } from "./cli";
import { isLoopback } from "./loopback";

test("the admin key comes from the environment, never the command line", () => {
  expect(parseCli(["--port", "0"], { CONVEX_ADMIN_KEY: "k1" })).toMatchObject({ port: 0, adminKey: "k1" });
  expect(parseCli([], { CONVEX_SELF_HOSTED_ADMIN_KEY: "k2" }).adminKey).toBe("k2");
  expect(parseCli([], { CONVEX_ADMIN_KEY: "k1", CONVEX_SELF_HOSTED_ADMIN_KEY: "k2" }).adminKey).toBe("k1");
  for (const argv of [["--admin-key", "s3cret"], ["--admin-key=s3cret"]]) {
    let message = "";
    try {
      parseCli(argv, { CONVEX_ADMIN_KEY: "k1" });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/--admin-key is not accepted.*set CONVEX_ADMIN_KEY/);
    expect(message).not.toContain("s3cret");
  }
  expect(() => parseCli([], {})).toThrow(/CONVEX_ADMIN_KEY/);
});

test("binds loopback unless --allow-remote", () => {
  const env = { CONVEX_ADMIN_KEY: "k" };
  expect(parseCli([], env).host).toBe("127.0.0.1");
  for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]) {
    expect(isLoopback(host), host).toBe(true);
    expect(parseCli(["--host", host], env).host).toBe(host);
  }
  for (const host of ["0.0.0.0", "::", "192.168.1.5", "example.com", "128.0.0.1"]) {
    expect(isLoopback(host), host).toBe(false);
    expect(() => parseCli(["--host", host], env), host).toThrow(/not a loopback address.*--allow-remote/);
    expect(parseCli(["--host", host, "--allow-remote"], env)).toMatchObject({ host, allowRemote: true });
  }
});

test("admin keys compare by digest: right key, wrong key of any length", async () => {
  const auth = createAuthenticator({ adminKey: "the-admin-key" });
  expect(await auth("Convex the-admin-key")).toEqual({ admin: true, identity: null });
  for (const wrong of ["the-admin-kex", "the-admin-key-longer", "", "x"]) {
    await expect(auth(`Convex ${wrong}`)).rejects.toMatchObject({ status: 401, code: "BadAdminKey" });
  }
});
