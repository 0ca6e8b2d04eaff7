'use strict';
// Seed 001's "repository" plugin: the host keeps the table and the bus,
// the plugin never sees a file or a socket. `corral` is the host's
// services (runtimes/node/corral-plugin.d.ts).

const ID = /^[a-z0-9][a-z0-9_-]{0,63}$/;

module.exports = class UserDirectory {
  constructor(settings, corral) {
    this.corral = corral;
  }

  /** @param {{ id: string, name: string }} input */
  async createUser({ id, name } = {}) {
    if (typeof id !== 'string' || !ID.test(id)) throw new TypeError('id must match ' + ID);
    if (typeof name !== 'string' || name.length === 0) throw new TypeError('name is required');
    const existing = await this.corral.kv.get('users', id);
    const user = { id, name, createdAt: existing ? existing.createdAt : Date.now() };
    await this.corral.kv.put('users', id, user);
    await this.corral.publish(existing ? 'user:renamed' : 'user:created', { id, name });
    return user;
  }

  /** @param {{ id: string }} input */
  async getUser({ id } = {}) {
    const user = await this.corral.kv.get('users', String(id));
    if (user === null) {
      const e = new Error(`no user ${id}`);
      e.name = 'UserNotFound';
      throw e;
    }
    return user;
  }

  async listUsers({ after, limit = 100 } = {}) {
    return this.corral.kv.list('users', { after, limit });
  }
};
