'use strict';
// Seed 003's hook plugins, as methods corrald runs around other plugins'
// calls: on_submit may reject or rewrite the input, on_result may rewrite
// the output, on_error observes.

module.exports = class Audit {
  constructor(settings) {
    this.blocked = (settings.blockedWords || []).map((w) => w.toLowerCase());
    this.audited = 0;
    this.errors = 0;
  }

  /** on_submit: reject blocked words; ids are compared in lower case. */
  async checkSubmit({ plugin, method, input }) {
    const text = JSON.stringify(input === undefined ? null : input).toLowerCase();
    const word = this.blocked.find((w) => text.includes(w));
    if (word) {
      const e = new Error(`the input to ${plugin}.${method} holds the blocked word "${word}"`);
      e.name = 'Blocked';
      throw e;
    }
    if (input && typeof input.id === 'string') {
      return { input: { ...input, id: input.id.trim().toLowerCase() } };
    }
    return {};
  }

  /** on_result: stamp object results with a sequence number. */
  async stampResult({ output }) {
    this.audited += 1;
    if (output && typeof output === 'object' && !Array.isArray(output)) {
      return { output: { ...output, audit: { seq: this.audited } } };
    }
    return {};
  }

  /** on_error: observe only. */
  async recordError({ plugin, method, error }) {
    this.errors += 1;
    console.warn(`${plugin}.${method} failed: ${error && error.code}`);
    return {};
  }

  async stats() {
    return { audited: this.audited, errors: this.errors };
  }
};
