// Methods the confined JavaScript tests call. The runaways never return on
// their own: the engine's limits stop them.
const { shout } = require("./lib/shout");

class Probe {
  constructor(settings, corral) {
    this.settings = settings;
    this.corral = corral;
    this.calls = 0;
  }

  // A host service, reached through the supervisor: its answer, or its
  // typed error.
  async service(input) {
    try {
      return { ok: await this.corral.kv.get(input.table, input.key) };
    } catch (err) {
      return { err: { name: err.name, code: err.code, message: err.message, service: err.service } };
    }
  }

  greet(input) {
    this.calls += 1;
    console.log(`greeting ${input && input.name}`);
    return { greeting: shout(`hello, ${(input && input.name) || "world"}`), calls: this.calls };
  }

  async later(n) {
    return (await Promise.resolve(n)) * 2;
  }

  fail(input) {
    throw new TypeError(`refused ${input && input.what}`);
  }

  spin() {
    for (;;) {}
  }

  bomb() {
    const hoard = [];
    for (;;) hoard.push(new Array(65536).fill(7));
  }

  // What the engine does not offer: each must fail, and say so.
  reach(what) {
    switch (what) {
      case "globals":
        return ["std", "os", "process", "fetch", "XMLHttpRequest", "WebSocket", "Deno", "Bun",
                "setTimeout", "scriptArgs", "print"]
          .filter((name) => typeof globalThis[name] !== "undefined");
      case "require-fs": return require("fs");
      case "require-child_process": return require("child_process");
      case "require-absolute": return require("/etc/passwd");
      case "require-outside": return require("../../../../../../etc/passwd");
      default: throw new Error(`no probe ${what}`);
    }
  }

  async importModule(name) {
    return Object.keys(await import(name));
  }
}

module.exports = Probe;
