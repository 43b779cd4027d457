pub async fn run(_a: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("demo not built yet")
}
#[derive(clap::Args)]
pub struct DemoArgs {}
