//! Train the toxicity model on the labelled posts and measure it: 5-fold cross-validation of
//! the model and of the word-list baseline (a Markdown report on stdout, for
//! docs/moderation.md), then the model trained on every post, written for the binary.
//!
//! `cargo run --release -p moderation --bin train-moderation -- [DATA] [OUT]`
//! (defaults: `../shared/data/chat-moderation/train.csv`, `moderation/model/toxicity.bin`).

use std::time::Instant;

use moderation::eval::{cross_validate, table, WordList};
use moderation::features::features;
use moderation::model::{Model, TrainConfig};
use moderation::text::words;

const FOLDS: usize = 5;
const SEED: u64 = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data = args
        .next()
        .unwrap_or_else(|| "../shared/data/chat-moderation/train.csv".into());
    let out = args
        .next()
        .unwrap_or_else(|| "moderation/model/toxicity.bin".into());
    let text = std::fs::read_to_string(&data)
        .map_err(|e| format!("{data}: {e} (the labelled posts: see docs/moderation.md)"))?;
    let rows = moderation::dataset::parse(&text)?;
    eprintln!("{} labelled posts from {data}", rows.len());
    let labels: Vec<usize> = rows.iter().map(|(c, _)| *c).collect();
    let examples: Vec<_> = rows.iter().map(|(c, t)| (features(t), *c)).collect();
    let tokens: Vec<Vec<String>> = rows.iter().map(|(_, t)| words(t)).collect();
    let config = TrainConfig::default();
    if std::env::var_os("AETHEX_TRAIN_SWEEP").is_some() {
        // The settings compared for docs/moderation.md: macro-F1 by cross-validation.
        for epochs in [2, 4, 8, 16] {
            for rate in [0.02f32, 0.05, 0.1, 0.4] {
                for class_weight in [0.0f32, 0.5, 0.65, 0.75] {
                    let c = TrainConfig {
                        epochs,
                        rate,
                        class_weight,
                        ..config
                    };
                    let cv = model_cv(&labels, &examples, &c);
                    println!(
                        "epochs {epochs:2} rate {rate:.2} class_weight {class_weight:.2}: macro-F1 {:.3}, hate recall {:.3}",
                        cv.macro_f1(),
                        cv.class(0).recall
                    );
                }
            }
        }
        return Ok(());
    }

    if std::env::var_os("AETHEX_TRAIN_THRESHOLDS").is_some() {
        // What a channel's toxicity_threshold holds (docs/moderation.md): by cross-validation,
        // the share of each class's posts whose score (P(hate) + P(offensive)) reaches it.
        thresholds(&labels, &examples, &config);
        return Ok(());
    }

    let started = Instant::now();
    let model_cv = model_cv(&labels, &examples, &config);
    eprintln!(
        "model cross-validated in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let baseline_cv = cross_validate(
        &labels,
        FOLDS,
        SEED,
        |train| {
            let part: Vec<(&[String], usize)> = train
                .iter()
                .map(|i| (tokens[*i].as_slice(), labels[*i]))
                .collect();
            WordList::derive(&part)
        },
        |w, i| w.predict(&tokens[i]),
    );
    println!(
        "{FOLDS}-fold cross-validation, {} posts, seed {SEED}\n",
        rows.len()
    );
    println!(
        "{}",
        table("model (logistic regression, hashed n-grams)", &model_cv)
    );
    println!("{}", table("baseline (derived word lists)", &baseline_cv));
    println!(
        "macro-F1: model {:.3}, baseline {:.3}",
        model_cv.macro_f1(),
        baseline_cv.macro_f1()
    );

    let model = Model::train(&examples, &config);
    let bytes = model.to_bytes();
    std::fs::write(&out, &bytes).map_err(|e| format!("{out}: {e}"))?;
    eprintln!("wrote {out} ({} bytes)", bytes.len());
    // The figure a retrain must reproduce (tests/retrain.rs).
    let report = out.replace(".bin", ".cv");
    let recall = |c: &moderation::eval::Confusion, k: usize| c.class(k).recall;
    std::fs::write(
        &report,
        format!(
            "posts {}\nfolds {FOLDS}\nseed {SEED}\nmacro_f1 {:.4}\nbaseline_macro_f1 {:.4}\n\
             recall_hate {:.4}\nrecall_offensive {:.4}\nrecall_neither {:.4}\n",
            rows.len(),
            model_cv.macro_f1(),
            baseline_cv.macro_f1(),
            recall(&model_cv, 0),
            recall(&model_cv, 1),
            recall(&model_cv, 2),
        ),
    )
    .map_err(|e| format!("{report}: {e}"))?;
    eprintln!("wrote {report}");
    Ok(())
}

/// The shipped (quantised) model's cross-validation with `config`.
fn model_cv(
    labels: &[usize],
    examples: &[(moderation::features::Features, usize)],
    config: &TrainConfig,
) -> moderation::eval::Confusion {
    cross_validate(
        labels,
        FOLDS,
        SEED,
        |train| {
            let part: Vec<_> = train.iter().map(|i| examples[*i].clone()).collect();
            Model::train(&part, config).shipped()
        },
        |m, i| m.predict(&examples[i].0),
    )
}

/// Print, for each threshold, the share of hate, offensive and neither posts scored at or
/// above it by the shipped model of the fold that did not train on them.
fn thresholds(
    labels: &[usize],
    examples: &[(moderation::features::Features, usize)],
    config: &TrainConfig,
) {
    let fold = moderation::eval::folds(labels.len(), FOLDS, SEED);
    let mut scores = vec![0f32; labels.len()];
    for f in 0..FOLDS {
        let part: Vec<_> = (0..labels.len())
            .filter(|i| fold[*i] != f)
            .map(|i| examples[i].clone())
            .collect();
        let model = Model::train(&part, config).shipped();
        for i in (0..labels.len()).filter(|i| fold[*i] == f) {
            let p = model.probabilities(&examples[i].0);
            scores[i] = p[0] + p[1];
        }
    }
    println!("| threshold | hate posts at or above | offensive posts | neither posts |");
    println!("|---|---|---|---|");
    for t in [0.5f32, 0.7, 0.8, 0.9, 0.95] {
        let share = |class: usize| {
            let of: Vec<f32> = (0..labels.len())
                .filter(|i| labels[*i] == class)
                .map(|i| scores[i])
                .collect();
            100.0 * of.iter().filter(|s| **s >= t).count() as f64 / of.len().max(1) as f64
        };
        println!(
            "| {t:.2} | {:.1} % | {:.1} % | {:.1} % |",
            share(0),
            share(1),
            share(2)
        );
    }
}
