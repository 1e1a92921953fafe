//! `tmidb-cli`: thin main over [`tmidb::cli`].

use clap::Parser;

fn main() {
    // `COMPLETE=bash tmidb-cli` prints the dynamic completion script; the shell then calls
    // back here to complete (unit names from the running supervisor).
    clap_complete::CompleteEnv::with_factory(tmidb::cli::args::command).complete();
    let cli = tmidb::cli::args::Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Err(e) = rt.block_on(tmidb::cli::run(cli)) {
        eprintln!("tmidb-cli: {e}");
        std::process::exit(e.exit_code());
    }
}
