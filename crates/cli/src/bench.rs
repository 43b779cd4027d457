pub async fn run(_a: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("bench not built yet")
}
#[derive(clap::Args)]
pub struct BenchArgs {}
