// The smallest Node.js plugin, for the benchmarks: its echo does nothing
// but return its input.
class Noop {
  echo(input) {
    return input;
  }
}

module.exports = Noop;
