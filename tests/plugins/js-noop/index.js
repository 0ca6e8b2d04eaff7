// The smallest JavaScript plugin, for the benchmarks: a bucket-layout
// folder (no manifest) whose echo does nothing but return its input.
class Noop {
  echo(input) {
    return input;
  }
}

module.exports = Noop;
