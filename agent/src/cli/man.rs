//! `shoal man --out DIR`: the manual pages, generated from the command definitions themselves
//! (clap_mangen), so that they cannot drift from the binary they describe.

use std::path::PathBuf;

use clap::{Args, CommandFactory as _};

/// `shoal man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages into (created if missing), e.g. `/usr/local/share/man/man1`.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// Writes one page per command and subcommand into `args.out`.
pub fn write_pages(args: &ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| anyhow::anyhow!("--out {}: {e}", args.out.display()))?;
    clap_mangen::generate_to(super::Cli::command(), &args.out)
        .map_err(|e| anyhow::anyhow!("writing the pages into {}: {e}", args.out.display()))?;
    let written = std::fs::read_dir(&args.out)?
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".1"))
        .count();
    println!(
        "{written} manual pages in {}; read one with `man -l {}/shoal-service-create.1`",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_for_every_command() {
        let dir = tempfile::tempdir().expect("temp dir");
        write_pages(&ManArgs {
            out: dir.path().to_path_buf(),
        })
        .expect("pages");
        for page in [
            "shoal.1",
            "shoal-agent.1",
            "shoal-service-update.1",
            "shoal-node-ls.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(page)).expect(page);
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{page} is no man page"
            );
        }
        let agent = std::fs::read_to_string(dir.path().join("shoal-agent.1")).expect("agent page");
        assert!(
            agent.contains("print\\-config"),
            "the agent page lacks --print-config"
        );
    }
}
