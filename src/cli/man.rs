//! Man pages generated from the clap definitions (clap_mangen): `tmidb-cli(1)` and one
//! page per subcommand, and `tmidb-supervisor(8)`. `tmidb.unit(5)` and `tmidb.toml(5)`
//! are written by hand in `man/`. A test fails when a committed page differs from what
//! the code generates; `make man` rewrites them.

use clap::CommandFactory;

/// Every generated page as `(file name, roff text)`.
pub fn pages() -> Vec<(String, Vec<u8>)> {
    let mut out = vec![];
    let mut cli = super::args::command();
    cli.build();
    render_tree(&cli, "tmidb-cli", "1", &mut out);
    let mut sup = super::supervisor::SupervisorArgs::command();
    sup.build();
    let mut buf = vec![];
    clap_mangen::Man::new(sup)
        .section("8")
        .manual("tmiDB manual")
        .render(&mut buf)
        .expect("render");
    out.push(("tmidb-supervisor.8".into(), buf));
    out
}

fn render_tree(cmd: &clap::Command, name: &str, section: &str, out: &mut Vec<(String, Vec<u8>)>) {
    let mut buf = vec![];
    let named = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " ").replacen("tmidb cli", "tmidb-cli", 1));
    clap_mangen::Man::new(named)
        .section(section)
        .manual("tmiDB manual")
        .render(&mut buf)
        .expect("render");
    out.push((format!("{name}.{section}"), buf));
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        render_tree(sub, &format!("{name}-{}", sub.get_name()), section, out);
    }
}

#[cfg(test)]
mod tests {
    /// Committed pages equal generated ones (`make man` rewrites them).
    #[test]
    fn committed_man_pages_match_the_code() {
        let stale: Vec<String> = super::pages()
            .into_iter()
            .filter_map(|(name, text)| crate::golden::check(&format!("man/{name}"), &text).err())
            .collect();
        assert!(
            stale.is_empty(),
            "{}\nrun `make man` and commit the pages",
            stale.join("\n")
        );
    }
}
