//! Live publishers whose stream key was replaced are ended. The API's key rotation ends its
//! channel's publisher at once; this covers every other way a key changes under a running
//! node: `aethex channel rotate-key` run against the same database (SQLite file or
//! PostgreSQL), or another origin sharing the database. Each publisher session keeps the
//! fingerprint of the key it used; every [`EVERY`] the store is asked whether the channel's
//! key still has it.

use std::time::Duration;

use crate::control::SfuControl;
use crate::http::AppState;

/// How often live publishers' keys are checked.
pub const EVERY: Duration = Duration::from_secs(2);

/// Check every publisher's key once; the publishers ended (their channels).
pub async fn check_keys<C: SfuControl>(st: &AppState<C>) -> Vec<String> {
    let mut ended = Vec::new();
    for (token, channel, peer, key) in st.sessions.publishers() {
        match st.store.key_matches(&channel, &key).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%channel, "stream key replaced: ending the live publisher");
                st.sessions.remove(&token);
                // Already gone on the media side is fine: the resource is gone too.
                let _ = st.sfu.close(peer).await;
                ended.push(channel);
            }
            // A store error ends nobody: the next round asks again.
            Err(e) => tracing::warn!(%channel, error = %e, "could not check the stream key"),
        }
    }
    ended
}

/// Check publishers' keys and stage guests' invites every [`EVERY`], until the task is
/// dropped.
pub async fn watch_keys<C: SfuControl>(st: AppState<C>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        check_keys(&st).await;
        crate::stage::end_uninvited(&st).await;
    }
}
