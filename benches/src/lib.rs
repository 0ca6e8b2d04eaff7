//! benchmarks: corral against bare kernel primitives and bwrap
