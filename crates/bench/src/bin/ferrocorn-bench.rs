//! Stand-alone `ferrocorn-bench` binary (used by `benches/bench_vs_wrk.sh`):
//! the same as `ferrocorn bench`, without Python.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(ferrocorn_bench::main(args));
}
