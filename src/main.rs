//! `aethex`: the AeThex LIVE media server. Parses flags, installs tracing, loads config, calls
//! the library. See `aethex --help`.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use aethex::config::{Config, ConfigError, SHIPPED};
use aethex::Listeners;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use signaling::StoreError;

/// AeThex LIVE: a low-latency WHIP/WHEP live-streaming server.
///
/// Go live from OBS 30+ (Settings > Stream > Service: WHIP) or a browser, watch in a browser
/// with sub-second delay. Start with `aethex serve`; it prints the URLs to use.
#[derive(Parser)]
#[command(name = "aethex", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node: SFU, WHIP/WHEP, web client and SQLite storage in one process.
    Serve(ServeArgs),
    /// Run a regional edge: pulls channels from an upstream (origin or edge) over QUIC while it
    /// has viewers for them, and serves WHEP viewers in its region.
    Edge(EdgeArgs),
    /// Check a configuration file and print the effective configuration.
    CheckConfig {
        /// The file to check.
        #[arg(long, short, env = "AETHEX_CONFIG", default_value = "config.toml")]
        config: PathBuf,
    },
    /// Print the documented default configuration (the shipped config.toml).
    DefaultConfig,
    /// Manage channels and stream keys.
    #[command(subcommand)]
    Channel(ChannelCommand),
    /// Co-streaming stages: invite guests onto a channel's stage, revoke invites.
    #[command(subcommand)]
    Stage(StageCommand),
    /// Set a public API key's tier: free (10k requests/day, read-only), pro (100k/day) or
    /// enterprise (unlimited). Keys are made by their users (POST /api/keys).
    ApiKeyTier {
        /// The key's id (`key_...`, from GET /api/keys).
        id: String,
        /// free, pro or enterprise.
        tier: String,
        /// Configuration file (for the database).
        #[arg(long, short, env = "AETHEX_CONFIG")]
        config: Option<PathBuf>,
        /// Directory for the SQLite database [config: storage.data_dir].
        #[arg(long, env = "AETHEX_DATA_DIR")]
        data_dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Configuration file (default: ./config.toml if present, else built-in defaults).
    #[arg(long, short, env = "AETHEX_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the SQLite database [config: storage.data_dir].
    #[arg(long, env = "AETHEX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// HTTP listen address, e.g. 0.0.0.0:8080 [config: http.listen].
    #[arg(long, env = "AETHEX_HTTP_LISTEN")]
    http_listen: Option<SocketAddr>,
    /// UDP port for all WebRTC media [config: rtc.udp_port].
    #[arg(long, env = "AETHEX_UDP_PORT")]
    udp_port: Option<u16>,
    /// IP announced to peers as the ICE candidate (repeatable) [config: rtc.advertise_ips].
    #[arg(long, env = "AETHEX_ADVERTISE_IP", value_delimiter = ',')]
    advertise_ip: Vec<IpAddr>,
    /// Accept edges over QUIC on this address, e.g. 0.0.0.0:8190 [config: relay.listen].
    /// Needs the cluster secret (AETHEX_RELAY_SECRET or relay.secret).
    #[arg(long, env = "AETHEX_RELAY_LISTEN")]
    relay_listen: Option<SocketAddr>,
}

#[derive(Args)]
struct EdgeArgs {
    /// The upstream's relay address HOST:PORT (an origin's --relay-listen) [config: relay.origin].
    #[arg(long, env = "AETHEX_ORIGIN")]
    origin: String,
    /// This edge's region name, e.g. eu-west [config: relay.region].
    #[arg(long, env = "AETHEX_REGION")]
    region: String,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum ChannelCommand {
    /// Create a channel and print its stream key (shown once; only a hash is stored).
    Create(ChannelArgs),
    /// Replace a channel's stream key and print the new one.
    RotateKey(ChannelArgs),
    /// Make a channel private: viewers need a playback token (`aethex channel token`).
    Private(ChannelArgs),
    /// Make a channel public again.
    Public(ChannelArgs),
    /// Print a signed playback token for a (private) channel and a watch URL carrying it.
    /// Tokens are checked offline by every node holding the cluster secret.
    Token {
        #[command(flatten)]
        channel: ChannelArgs,
        /// Validity in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[derive(Subcommand)]
enum StageCommand {
    /// Invite a guest onto a channel's stage and print `{"id", "token", "join_url",
    /// "expires_at"}` (the token is shown once; only a hash is stored). The guest publishes
    /// with `Authorization: Bearer <token>` and opens `join_url`.
    Invite {
        #[command(flatten)]
        channel: ChannelArgs,
        /// The guest's display name (1-64 characters).
        #[arg(long = "name", id = "guest", default_value = platform::stage::DEFAULT_NAME)]
        guest: String,
        /// Seconds the invite admits its guest (60 to 604800).
        #[arg(long, default_value_t = platform::stage::DEFAULT_TTL_S)]
        ttl: i64,
    },
    /// Revoke an invite: its token admits no one from now on.
    Revoke {
        #[command(flatten)]
        channel: ChannelArgs,
        /// The invite's id (from `aethex stage invite` or GET /api/channels/{name}/stage/invites).
        id: String,
    },
}

#[derive(Args)]
struct ChannelArgs {
    /// Channel name: 1-64 characters of a-z, 0-9, '-' and '_'.
    name: String,
    /// Configuration file (for data_dir and the public URL).
    #[arg(long, short, env = "AETHEX_CONFIG")]
    config: Option<PathBuf>,
    /// Directory for the SQLite database [config: storage.data_dir].
    #[arg(long, env = "AETHEX_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// What `aethex channel` does.
enum Action {
    Create,
    Rotate,
    Private(bool),
    Token(u64),
}

/// Secrets and URLs from the environment win over the file (keep them out of config files).
fn apply_secret_env(config: &mut Config) {
    if let Ok(secret) = std::env::var("AETHEX_RELAY_SECRET") {
        config.relay.secret = secret;
    }
    if let Ok(secret) = std::env::var("AETHEX_TOKEN_SECRET") {
        config.cluster.token_secret = secret;
    }
    if let Ok(url) = std::env::var("AETHEX_REDIS_URL") {
        config.cluster.redis_url = url;
    }
    if let Ok(url) = std::env::var("AETHEX_DATABASE_URL") {
        config.database.url = url;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::DefaultConfig => {
            print!("{SHIPPED}");
            Ok(())
        }
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve(args) => runtime().and_then(|rt| rt.block_on(serve(args, None))),
        Command::Edge(args) => {
            let edge = (args.origin, args.region);
            runtime().and_then(|rt| rt.block_on(serve(args.serve, Some(edge))))
        }
        Command::Channel(cmd) => runtime().and_then(|rt| rt.block_on(channel(cmd))),
        Command::Stage(cmd) => runtime().and_then(|rt| rt.block_on(stage(cmd))),
        Command::ApiKeyTier {
            id,
            tier,
            config,
            data_dir,
        } => runtime().and_then(|rt| rt.block_on(api_key_tier(id, tier, config, data_dir))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("AETHEX_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,str0m=warn,sqlx=warn"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}

fn check_config(path: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::load(Some(path)).map_err(explain)?;
    println!("{}: ok", path.display());
    println!(
        "{}",
        toml::to_string_pretty(&config).context("rendering the configuration")?
    );
    Ok(())
}

fn explain(e: ConfigError) -> anyhow::Error {
    anyhow::anyhow!("{e}\nhint: `aethex default-config` prints every key with its meaning")
}

fn load(config: Option<&std::path::Path>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut c = Config::load(config).map_err(explain)?;
    if let Some(d) = data_dir {
        c.storage.data_dir = d;
    }
    Ok(c)
}

async fn serve(args: ServeArgs, edge: Option<(String, String)>) -> anyhow::Result<()> {
    init_tracing();
    let mut config = load(args.config.as_deref(), args.data_dir)?;
    if let Some((origin, region)) = edge {
        config.relay.origin = origin;
        config.relay.region = region;
    }
    if let Some(l) = args.relay_listen {
        config.relay.listen = l.to_string();
    }
    apply_secret_env(&mut config);
    if let Some(l) = args.http_listen {
        config.http.listen = l;
    }
    if let Some(p) = args.udp_port {
        config.rtc.udp_port = p;
    }
    if !args.advertise_ip.is_empty() {
        config.rtc.advertise_ips = args.advertise_ip;
    }
    config.validate().map_err(explain)?;

    let store = aethex::open_store(&config)
        .await
        .with_context(|| format!("opening the database {}", aethex::store_location(&config)))?;
    // An edge has no channels of its own: its upstream's are served.
    let demo_key = if !config.relay.is_edge() && store.channel_count().await? == 0 {
        Some(store.create_channel("demo").await?)
    } else {
        None
    };
    let listeners = Listeners::bind(&config).await.with_context(|| {
        format!(
            "binding HTTP {} and UDP (and ICE-TCP) {}:{}",
            config.http.listen, config.rtc.bind_ip, config.rtc.udp_port
        )
    })?;
    let base = aethex::public_url(&config, listeners.http_addr());
    print_banner(&config, &listeners, &base, demo_key.as_ref());

    aethex::serve(config, store, listeners, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn print_banner(
    config: &Config,
    l: &Listeners,
    base: &str,
    demo_key: Option<&signaling::StreamKey>,
) {
    // Written in one go, ignoring errors: a closed stdout must not stop the server.
    let mut out = String::new();
    let ips: Vec<String> = config
        .rtc
        .effective_advertise_ips()
        .iter()
        .map(ToString::to_string)
        .collect();
    let _ = writeln!(out, "AeThex LIVE {} is running", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        out,
        "  HTTP            {}  (WHIP, WHEP, web client, /metrics, /healthz)",
        l.http_addr()
    );
    let _ = writeln!(
        out,
        "  media (UDP)     {}  advertised as {}",
        l.udp_addr(),
        ips.join(", ")
    );
    if let Some(tcp) = l.tcp_addr() {
        let _ = writeln!(out, "  media (ICE-TCP) {tcp}  for networks that block UDP");
    }
    let _ = writeln!(out, "  database        {}", aethex::store_location(config));
    let _ = writeln!(out, "  go live (web)   {base}/live");
    let _ = writeln!(
        out,
        "  platform API    {base}/api  (chat, follows, analytics, webhooks, API keys)"
    );
    let _ = writeln!(
        out,
        "  API reference   {base}/api/openapi.json  (OpenAPI 3.1)"
    );
    if let Some(key) = demo_key {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "First start: created channel \"demo\". Its stream key is shown only now:"
        );
        let _ = writeln!(out, "  OBS 30+  Settings > Stream");
        let _ = writeln!(out, "    Service       WHIP");
        let _ = writeln!(out, "    Server        {base}/whip");
        let _ = writeln!(out, "    Bearer Token  {}", key.expose());
        let _ = writeln!(out, "  Watch           {base}/watch/demo");
    } else {
        let _ = writeln!(out, "  watch           {base}/watch/<channel>");
        let _ = writeln!(
            out,
            "  new channel     aethex channel create <name> --data-dir {}",
            config.storage.data_dir.display()
        );
    }
    if config.rtc.advertise_ips.is_empty() && config.rtc.bind_ip.is_unspecified() {
        let _ = writeln!(out);
        let _ = writeln!(out, "note: media is advertised on 127.0.0.1 only; pass --advertise-ip <this machine's IP> for other machines");
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested: no new sessions, closing the open ones");
}

async fn stage(cmd: StageCommand) -> anyhow::Result<()> {
    let args = match &cmd {
        StageCommand::Invite { channel, .. } | StageCommand::Revoke { channel, .. } => channel,
    };
    let mut config = load(args.config.as_deref(), args.data_dir.clone())?;
    apply_secret_env(&mut config);
    let store = aethex::open_store(&config)
        .await
        .with_context(|| format!("opening the database {}", aethex::store_location(&config)))?;
    let out = match &cmd {
        StageCommand::Invite {
            channel,
            guest,
            ttl,
        } => {
            storage::check_invite(guest, *ttl).map_err(|e| anyhow::anyhow!("{e}"))?;
            let new = store
                .create_invite(&channel.name, guest.trim(), *ttl)
                .await?
                .ok_or_else(|| anyhow::anyhow!("no such channel: {}", channel.name))?;
            let base = aethex::public_url(&config, config.http.listen);
            let token = new.token.expose();
            serde_json::json!({
                "id": new.invite.id,
                "token": token,
                "join_url": platform::stage::join_url(&base, &channel.name, token),
                "expires_at": new.invite.expires_at,
            })
        }
        StageCommand::Revoke { channel, id } => {
            if !store.revoke_invite(&channel.name, id).await? {
                anyhow::bail!("no such invite of channel {}: {id}", channel.name);
            }
            serde_json::json!({"channel": channel.name, "revoked": id})
        }
    };
    store.close().await;
    println!("{out}");
    Ok(())
}

async fn channel(cmd: ChannelCommand) -> anyhow::Result<()> {
    let (args, action) = match cmd {
        ChannelCommand::Create(a) => (a, Action::Create),
        ChannelCommand::RotateKey(a) => (a, Action::Rotate),
        ChannelCommand::Private(a) => (a, Action::Private(true)),
        ChannelCommand::Public(a) => (a, Action::Private(false)),
        ChannelCommand::Token { channel, ttl } => (channel, Action::Token(ttl)),
    };
    sfu::StreamId::new(&args.name)
        .map_err(|e| anyhow::anyhow!("invalid channel name {:?}: {e}", args.name))?;
    let mut config = load(args.config.as_deref(), args.data_dir)?;
    apply_secret_env(&mut config);
    let store = aethex::open_store(&config)
        .await
        .with_context(|| format!("opening the database {}", aethex::store_location(&config)))?;
    let base = aethex::public_url(&config, config.http.listen);
    let key = match action {
        Action::Rotate => store
            .rotate_key(&args.name)
            .await?
            .ok_or_else(|| anyhow::anyhow!("no such channel: {}", args.name))?,
        Action::Create => match store.create_channel(&args.name).await {
            Ok(k) => k,
            Err(StoreError::Exists(n)) => {
                anyhow::bail!("channel {n} already exists (use `aethex channel rotate-key {n}` for a new key)")
            }
            Err(e) => return Err(e.into()),
        },
        Action::Private(private) => {
            if !store.set_private(&args.name, private).await? {
                anyhow::bail!("no such channel: {}", args.name);
            }
            store.close().await;
            let out = serde_json::json!({"channel": args.name, "private": private});
            println!("{out}");
            return Ok(());
        }
        Action::Token(ttl) => {
            let private = store.is_private(&args.name).await?;
            store.close().await;
            let Some(private) = private else {
                anyhow::bail!("no such channel: {}", args.name);
            };
            let secret = aethex::token_secret(&config).context("the playback-token secret")?;
            let exp = cluster::token::unix_now() + ttl;
            let token = cluster::TokenKey::new(&secret).sign(&args.name, exp);
            let out = serde_json::json!({
                "channel": args.name,
                "private": private,
                "token": token,
                "expires_at": exp,
                "watch_url": format!("{base}/watch/{}?token={token}", args.name),
            });
            println!("{out}");
            return Ok(());
        }
    };
    store.close().await;
    let out = serde_json::json!({
        "channel": args.name,
        "stream_key": key.expose(),
        "whip_url": format!("{base}/whip"),
        "watch_url": format!("{base}/watch/{}", args.name),
    });
    println!("{out}");
    Ok(())
}

async fn api_key_tier(
    id: String,
    tier: String,
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let parsed = platform::quota::Tier::parse(&tier)
        .ok_or_else(|| anyhow::anyhow!("unknown tier {tier:?}: use free, pro or enterprise"))?;
    let mut config = load(config.as_deref(), data_dir)?;
    apply_secret_env(&mut config);
    let store = aethex::open_store(&config)
        .await
        .with_context(|| format!("opening the database {}", aethex::store_location(&config)))?;
    let found = platform::quota::set_tier(&store, &id, parsed).await?;
    store.close().await;
    if !found {
        anyhow::bail!("no such API key: {id}");
    }
    println!("{}", serde_json::json!({"id": id, "tier": tier}));
    Ok(())
}
