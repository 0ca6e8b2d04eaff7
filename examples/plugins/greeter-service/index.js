'use strict';
// Seed 001's plugin shape, unchanged but for where its context comes
// from: corral hands initialize() the same eventBus and getDependency,
// brokered by the host under the operator's grants.

module.exports = {
  metadata: {
    name: 'greeter-service',
    version: '1.0.0',
    dependencies: ['user-directory'],
  },
  context: null,
  seen: [],

  async initialize(context) {
    this.context = context;
    this.users = context.getDependency('user-directory');
    // A wildcard subscription: user:created, user:renamed, ...
    await context.eventBus.on('user:*', (data, delivery) => {
      this.seen.push({ topic: delivery.topic, from: delivery.from, data });
      if (this.seen.length > 100) this.seen.shift();
    });
  },

  /** @param {{ id: string }} input */
  async execute(input) {
    const user = await this.users.getUser({ id: input && input.id });
    // Published as greeter.greeted: the operator's name map renames it.
    await this.context.eventBus.emit('greeted', { id: user.id });
    return { greeting: `Hello, ${user.name}!` };
  },

  async recentEvents() {
    return this.seen;
  },

  async cleanup() {
    this.context = null;
  },
};
