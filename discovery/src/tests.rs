use super::*;

const DAY: i64 = 86_400;
const NOW: i64 = 100 * DAY;

fn channel(name: &str, category: &str, created_at: i64) -> Channel {
    Channel {
        name: name.into(),
        category: category.into(),
        created_at,
    }
}

fn watch(viewer: &str, channel: &str, minutes: i64) -> Watch {
    Watch {
        viewer: viewer.into(),
        channel: channel.into(),
        started_at: NOW - DAY,
        seconds: minutes * 60,
    }
}

/// Channels: `big` (popular), `chess` and `chess2` (co-watched by chess fans), `cook` (another
/// category), `fresh` (made yesterday), `quiet` (small, old), `gone` (never live here).
fn fixture() -> (Vec<Channel>, Vec<Watch>) {
    let channels = vec![
        channel("big", "games", 0),
        channel("chess", "chess", 0),
        channel("chess2", "chess", 0),
        channel("cook", "food", 0),
        channel("fresh", "chess", NOW - DAY),
        channel("quiet", "food", 0),
        channel("gone", "chess", 0),
    ];
    let mut watches = Vec::new();
    for i in 0..30 {
        watches.push(watch(&format!("crowd{i}"), "big", 120));
    }
    for i in 0..6 {
        let v = format!("fan{i}");
        watches.push(watch(&v, "chess", 60));
        watches.push(watch(&v, "chess2", 45));
        watches.push(watch(&v, "gone", 90));
    }
    watches.push(watch("cook1", "cook", 30));
    watches.push(watch("quiet1", "quiet", 5));
    // The viewer under test: watched chess, follows cook.
    watches.push(watch("me", "chess", 50));
    (channels, watches)
}

fn names(picks: &[Pick]) -> Vec<(&str, &str)> {
    picks
        .iter()
        .map(|p| (p.channel.as_str(), p.reason.as_str()))
        .collect()
}

fn live(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn followed_first_then_co_watched_neighbour_then_a_small_creator_slot() {
    let (channels, watches) = fixture();
    let follows = vec![("me".to_string(), "cook".to_string())];
    let model = Model::build(&channels, &watches, &follows, NOW, Config::default());
    let on = live(&["big", "chess2", "cook", "fresh", "quiet"]);
    let picks = model.recommend(Some("me"), &on, 5);
    assert_eq!(
        names(&picks),
        [
            ("cook", "followed"),
            ("chess2", "also_watched"),
            // The category's other live channel, a small one: its score puts it first here.
            ("fresh", "category"),
            ("quiet", "new_creator"),
            ("big", "trending"),
        ]
    );
}

#[test]
fn offline_channels_never_appear_even_when_followed_or_co_watched() {
    let (channels, watches) = fixture();
    let follows = vec![("me".to_string(), "gone".to_string())];
    let model = Model::build(&channels, &watches, &follows, NOW, Config::default());
    let on = live(&["big", "cook"]);
    for viewer in [Some("me"), Some("fan0"), None] {
        let picks = model.recommend(viewer, &on, 10);
        assert!(
            picks.iter().all(|p| on.contains(&p.channel)),
            "{viewer:?}: {picks:?}"
        );
        assert_eq!(picks.len(), 2, "every live channel once: {picks:?}");
    }
    // Unknown live channels (no row) are not recommended either.
    assert!(model.recommend(None, &live(&["nosuch"]), 5).is_empty());
}

#[test]
fn a_new_creator_gets_the_fourth_slot_of_an_anonymous_viewer() {
    let mut channels = vec![channel("fresh", "x", NOW - DAY)];
    let mut watches = Vec::new();
    for i in 0..8 {
        let name = format!("pop{i}");
        channels.push(channel(&name, "x", 0));
        for v in 0..(20 - i) {
            watches.push(watch(&format!("v{v}"), &name, 60));
        }
    }
    let model = Model::build(&channels, &watches, &[], NOW, Config::default());
    let on: Vec<String> = channels.iter().map(|c| c.name.clone()).collect();
    let picks = model.recommend(None, &on, 8);
    assert_eq!(
        picks[3],
        Pick {
            channel: "fresh".into(),
            reason: Reason::NewCreator
        }
    );
    assert_eq!(
        names(&picks[..3]),
        [
            ("pop0", "trending"),
            ("pop1", "trending"),
            ("pop2", "trending")
        ]
    );
    assert!(model.is_small("fresh") && !model.is_small("pop0"));
    // Slot 8 is a small creator's too (the bottom 80 % by popularity).
    assert_eq!(picks[7].reason, Reason::NewCreator, "{picks:?}");
}

#[test]
fn popularity_decays_with_a_half_life() {
    let channels = vec![channel("a", "", 0), channel("b", "", 0)];
    let old = Watch {
        started_at: NOW - 7 * DAY,
        ..watch("v", "a", 60)
    };
    let model = Model::build(
        &channels,
        &[old, watch("w", "b", 60)],
        &[],
        NOW,
        Config::default(),
    );
    let (a, b) = (model.popularity("a"), model.popularity("b"));
    assert!(
        (a / b - 0.5 / 0.5f64.powf(1.0 / 7.0)).abs() < 1e-9,
        "{a} {b}"
    );
}

#[test]
fn the_same_logs_give_the_same_recommendations() {
    let (channels, watches) = fixture();
    let on = live(&["big", "chess2", "cook", "fresh", "quiet"]);
    let a = Model::build(&channels, &watches, &[], NOW, Config::default());
    let mut reversed = watches.clone();
    reversed.reverse();
    let b = Model::build(&channels, &reversed, &[], NOW, Config::default());
    for viewer in [Some("me"), Some("fan1"), None] {
        assert_eq!(a.recommend(viewer, &on, 5), b.recommend(viewer, &on, 5));
    }
}
