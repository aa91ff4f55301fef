//! Stages at an edge (docs/costreaming.md, "At an edge"): the edge runs no mix and no
//! speaker detector. Its upstream tells it who is on each stage it holds, who is featured
//! and who speaks (the relay's `stage` message), and relays every participant's stream and
//! the mix made at the origin like channels. Viewers with several video sections are shown
//! the participants as their streams arrive (as at the origin); this task gives every
//! one-section viewer the featured participant on its video section and the mix on its
//! audio section (the host again when the stage ends), and every viewer with several
//! sections the featured participant on its first, as the origin's driver does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sfu::driver::SfuHandle;
use sfu::StreamId;
use signaling::sessions::Sessions;
use signaling::ChannelSource;

use crate::stage_live::{restore, FeaturedFirst, OneSection, Shows};

/// How often one-section viewers are brought up to date (as at the origin).
const REVIEW_EVERY: Duration = Duration::from_millis(100);

/// Follow the stages `source` tells of, for the one-section viewers in `sessions`.
pub(crate) fn follow(
    sfu: SfuHandle,
    sessions: Arc<Sessions>,
    source: Arc<dyn ChannelSource>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut running: HashMap<StreamId, (OneSection, FeaturedFirst)> = HashMap::new();
        let mut tick = tokio::time::interval(REVIEW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let stages = source.stages();
            let ended: Vec<StreamId> = running
                .keys()
                .filter(|c| !stages.iter().any(|(s, _)| s == *c))
                .cloned()
                .collect();
            for channel in ended {
                running.remove(&channel);
                tracing::info!(%channel, "relayed stage ended: one-section viewers get the host again");
                for peer in sessions.single_viewers(channel.as_str()) {
                    restore(&sfu, peer, &channel).await;
                }
            }
            for (channel, stage) in stages {
                if stage.guests().next().is_none() {
                    continue;
                }
                let want = wanted(&sfu, &channel, stage.now.featured).await;
                let Some(want) = want else { continue };
                let viewers = sessions.single_viewers(channel.as_str());
                let mix = StreamId::mix(&channel);
                let (one, first) = running.entry(channel.clone()).or_insert_with(|| {
                    tracing::info!(%channel, "relayed stage: viewers follow the featured participant");
                    Default::default()
                });
                one.review(&sfu, viewers, &want, &mix, &channel).await;
                let viewers = sessions.stage_viewers(channel.as_str());
                first.review(&sfu, viewers, &want.featured).await;
            }
        }
    })
}

/// What one-section viewers of `channel`'s stage are to show here: the featured participant
/// while its stream is live at this edge, else the host; `None` while neither is.
async fn wanted(sfu: &SfuHandle, channel: &StreamId, featured: Option<StreamId>) -> Option<Shows> {
    let live = |s: StreamId| async move { sfu.is_live(s).await.unwrap_or(false) };
    let featured = match featured {
        Some(f) if live(f.clone()).await => f,
        _ if live(channel.clone()).await => channel.clone(),
        _ => return None,
    };
    Some(Shows {
        featured,
        mix: live(StreamId::mix(channel)).await,
    })
}
