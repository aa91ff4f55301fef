//! The per-viewer forwarding decision for one video packet, as a pure function: the viewer's
//! layer state and what the stream knows of the packet in, what to do with it out. The core
//! carries the step out (writes, cache starts, keyframe requests); the rules live here alone.

use crate::ids::LayerId;

/// What one viewer's forwarding state says about one video packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViewerState {
    /// The layer being forwarded (`None`: not started).
    pub current: Option<LayerId>,
    /// The layer wanted (differs from `current` while a switch waits for its keyframe).
    pub target: Option<LayerId>,
    /// Video is gated until a keyframe (new viewer, new source).
    pub needs_keyframe: bool,
    /// A replay from the keyframe cache is still being sent.
    pub replaying: bool,
}

/// What the stream knows of the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PacketFacts {
    pub layer: LayerId,
    /// It starts a keyframe.
    pub keyframe: bool,
    /// Its layer's cache holds a usable group (which includes this packet).
    pub cache_ready: bool,
    /// It starts a keyframe whose other packets arrived before it (lost on a relay, repaired
    /// by NACK): a viewer starting here must take the keyframe from the cache, which holds
    /// those packets in order, or it would never get them.
    pub late_start: bool,
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Not for this viewer: another layer, or a switch waiting for this layer's keyframe.
    Skip,
    /// Starting without a cached group: drop it and ask the layer for a keyframe.
    AwaitKeyframe,
    /// Starting: the layer's cached group (which holds this packet) starts the viewer.
    StartFromCache,
    /// A keyframe to start on, switch to (`switch`) or jump to from a replay: finish the
    /// replayed frame, then go live here; `late`: start from the cache instead.
    Cut { switch: bool, late: bool },
    /// The viewer is replaying: the live packet waits behind the replay, in order.
    Queue,
    /// Forward it.
    Send,
}

/// The step for one viewer and one video packet.
pub(crate) fn video_step(v: ViewerState, p: PacketFacts) -> Step {
    let on_layer = v.current == Some(p.layer) && !v.needs_keyframe;
    if !on_layer {
        if v.target != Some(p.layer) {
            return Step::Skip;
        }
        let starting = v.needs_keyframe || v.current.is_none();
        return match (p.keyframe, starting) {
            (true, _) => Step::Cut {
                switch: !starting,
                late: p.late_start,
            },
            // A switch waits for this layer's keyframe.
            (false, false) => Step::Skip,
            (false, true) if p.cache_ready => Step::StartFromCache,
            (false, true) => Step::AwaitKeyframe,
        };
    }
    match (v.replaying, p.keyframe) {
        // A fresh keyframe: skip what is left of the replay and go live here.
        (true, true) => Step::Cut {
            switch: false,
            late: p.late_start,
        },
        (true, false) => Step::Queue,
        (false, _) => Step::Send,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: ViewerState = ViewerState {
        current: Some(0),
        target: Some(0),
        needs_keyframe: false,
        replaying: false,
    };
    const NEW: ViewerState = ViewerState {
        current: None,
        target: Some(0),
        needs_keyframe: true,
        replaying: false,
    };

    fn packet(layer: LayerId, keyframe: bool) -> PacketFacts {
        PacketFacts {
            layer,
            keyframe,
            cache_ready: false,
            late_start: false,
        }
    }

    #[test]
    fn a_live_viewer_gets_its_layer_and_nothing_else() {
        assert_eq!(video_step(LIVE, packet(0, false)), Step::Send);
        assert_eq!(video_step(LIVE, packet(0, true)), Step::Send);
        assert_eq!(video_step(LIVE, packet(1, true)), Step::Skip);
    }

    #[test]
    fn a_new_viewer_starts_from_the_cache_or_waits_for_a_keyframe() {
        assert_eq!(video_step(NEW, packet(0, false)), Step::AwaitKeyframe);
        let cached = PacketFacts {
            cache_ready: true,
            ..packet(0, false)
        };
        assert_eq!(video_step(NEW, cached), Step::StartFromCache);
        let keyframe = packet(0, true);
        assert_eq!(
            video_step(NEW, keyframe),
            Step::Cut {
                switch: false,
                late: false
            }
        );
        assert_eq!(
            video_step(NEW, packet(1, true)),
            Step::Skip,
            "not its target"
        );
    }

    #[test]
    fn a_switch_happens_on_the_target_layers_keyframe_only() {
        let switching = ViewerState {
            target: Some(1),
            ..LIVE
        };
        assert_eq!(video_step(switching, packet(1, false)), Step::Skip);
        assert_eq!(
            video_step(switching, packet(1, true)),
            Step::Cut {
                switch: true,
                late: false
            }
        );
        // Until then its current layer keeps flowing.
        assert_eq!(video_step(switching, packet(0, false)), Step::Send);
    }

    #[test]
    fn a_replaying_viewer_queues_live_packets_and_jumps_on_a_keyframe() {
        let replaying = ViewerState {
            replaying: true,
            ..LIVE
        };
        assert_eq!(video_step(replaying, packet(0, false)), Step::Queue);
        let late = PacketFacts {
            late_start: true,
            ..packet(0, true)
        };
        assert_eq!(
            video_step(replaying, late),
            Step::Cut {
                switch: false,
                late: true
            }
        );
    }
}
