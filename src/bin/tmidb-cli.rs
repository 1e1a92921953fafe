//! `tmidb-cli`: thin main over [`tmidb::cli`].

use clap::Parser;

fn main() {
    let cli = tmidb::cli::Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(tmidb::cli::run(cli)) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("tmidb-cli: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
