//! Cross-model generalisation of adversarial examples (paper §4.2): Table 2 (transfer between
//! the six Table 1 models) and Tables 3 and 4 (transfer between models trained on disjoint
//! halves of the training set), beside the paper's numbers, with the paper's qualitative
//! findings checked explicitly.
//!
//! ```text
//! cargo run --release --example transfer -- table2  --images 1000 --json out/table2.json
//! cargo run --release --example transfer -- table34 --images 1000 --json out/table34.json
//! ```
//!
//! Models come from the zoo cache (trained on first use). Table 2's models are trained on the
//! whole training set (tag `mnist-train`); Table 3's on the halves `P1`, `P2` of
//! `train.split(30000, split_seed)` (tags `P1-seed<split_seed>`, `P2-seed<split_seed>`):
//! FC100-100-10 and FC123-456-10 on P1 from `--seed`, FC100-100-10' on P2 from `--seed + 1`.
//!
//! Adversarial examples are made by the untargeted box-constrained L-BFGS attack (the
//! smallest perturbation over all nine other labels, as for Table 1) on the first `--images`
//! images of `--set` (default: the test set; the paper does not say which set Table 2 used,
//! and its Table 4 used the test set). A cell is the error rate of the column's model on the
//! row's examples, against the clean images' true labels, so it includes that model's own
//! clean error on those images (reported in its own row). An image the source model already
//! misclassifies is not searched and keeps a zero perturbation (`Outcome::already_adversarial`):
//! it stays in the row, as every cell is over all the images, and "Av. distortion" is the mean
//! over all of them, zeros included. Each adversarial row counts those images
//! (`extra.already_misclassified` in the JSON, and a line under the tables) and gives the mean
//! distortion over the others (`extra.searched_mean_distortion`, Table 1's measure); its
//! `attack_success` and `evaluations_per_image` are over all the images.
//!
//! Beside the paper's Gaussian-noise rows (nominal stddev, clipped to the box; their measured
//! distortion is smaller because clipping removes part of the noise), each adversarial row has
//! a control: clipped Gaussian noise scaled per image to exactly that example's distortion
//! (`GaussianNoise::matching`). The checks compare adversarial rows with these controls, so
//! "above noise" is at equal distortion.

use blindspot::Check as _;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use blindspot::attack::{
    magnify, transfer_error, Attack, BoxLbfgsParams, Fgsm, GaussianNoise, OutcomeSummary, Target,
};
use blindspot::data::{Dataset, Mnist};
use blindspot::nn::{error_rate, Network};
use blindspot::zoo::{Zoo, TABLE1_AND_CONV};
use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use ndarray::{s, Array2};
use serde::Serialize;

#[derive(Clone, Copy, ValueEnum)]
enum Set {
    Train,
    Test,
}

#[derive(ClapArgs, Clone)]
struct Common {
    /// Images attacked per source model (the first N of the set).
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Which set the attacked images come from.
    #[arg(long, value_enum, default_value_t = Set::Test)]
    set: Set,
    /// Seed of the zoo models.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bisection steps of the attack's search over c.
    #[arg(long, default_value_t = 5)]
    search_steps: usize,
    /// Seed of the Gaussian noise (image i uses noise_seed·1000003 + i).
    #[arg(long, default_value_t = 7)]
    noise_seed: u64,
    /// Write every cell as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Table 2: transfer between the six Table 1 models, and Gaussian noise 0.1 / 0.3.
    Table2 {
        #[command(flatten)]
        common: Common,
    },
    /// Tables 3 and 4: models trained on disjoint halves P1 / P2 of the training set.
    Table34 {
        #[command(flatten)]
        common: Common,
        /// Seed of the P1 / P2 split.
        #[arg(long, default_value_t = 1)]
        split_seed: u64,
        /// Distortion the perturbations are magnified to (paper: 0.1).
        #[arg(long, default_value_t = 0.1)]
        magnify_to: f64,
    },
}

#[derive(Parser)]
#[command(
    about = "Reproduce Tables 2-4 of Szegedy et al. (2013): transfer of adversarial examples"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The images under attack.
struct Images {
    xs: Array2<f32>,
    labels: Vec<usize>,
    set: &'static str,
}

impl Images {
    fn new(mnist: &Mnist, c: &Common) -> Images {
        let (data, set) = match c.set {
            Set::Train => (&mnist.train, "train"),
            Set::Test => (&mnist.test, "test"),
        };
        let n = c.images.clamp(1, data.len());
        Images {
            xs: data.images().slice(s![..n, ..]).to_owned(),
            labels: data.labels()[..n].to_vec(),
            set,
        }
    }

    fn len(&self) -> usize {
        self.labels.len()
    }
}

fn noise_seed(c: &Common, i: usize) -> u64 {
    c.noise_seed.wrapping_mul(1_000_003).wrapping_add(i as u64)
}

/// One row of a transfer table: a set of perturbed images and each model's error on them.
struct Row {
    name: String,
    errors: Vec<f32>,
    mean_distortion: f64,
    extra: Extra,
}

/// What a row's `extra` holds in the JSON, by kind of row: `null` for clean images and noise
/// controls.
#[derive(Clone, Copy, Serialize)]
#[serde(untagged)]
enum Extra {
    None,
    /// Adversarial rows: the attack's figures (evaluations only for box L-BFGS).
    Attack {
        attack_success: f64,
        attack_seconds: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        evaluations_per_image: Option<f64>,
        /// Images the source model already misclassified: not searched, zero perturbation.
        already_misclassified: usize,
        /// Mean distortion over the successful searches, those images left out.
        searched_mean_distortion: f64,
    },
    /// Gaussian-noise rows.
    Noise {
        stddev: f64,
    },
    /// Magnified rows: the perturbations left as they were (zero, so no direction).
    Magnified {
        not_magnified_zero_perturbation: usize,
    },
}

impl Extra {
    fn attack(made: &Made, evaluations: bool) -> Extra {
        Extra::Attack {
            attack_success: made.success,
            attack_seconds: made.seconds,
            evaluations_per_image: evaluations.then_some(made.evaluations),
            already_misclassified: made.summary.already_adversarial,
            searched_mean_distortion: made.summary.mean_distortion,
        }
    }
}

/// A row in the JSON: each model's error by model name, and the paper's row where it has one.
#[derive(Serialize)]
struct RowJson {
    row: String,
    errors: BTreeMap<String, f32>,
    mean_distortion: f64,
    paper: Option<Vec<f64>>,
    extra: Extra,
}

impl Row {
    fn json(&self, models: &[String], paper: Option<&[f64]>) -> RowJson {
        RowJson {
            row: self.name.clone(),
            errors: models
                .iter()
                .cloned()
                .zip(self.errors.iter().copied())
                .collect(),
            mean_distortion: self.mean_distortion,
            paper: paper.map(<[f64]>::to_vec),
            extra: self.extra,
        }
    }
}

/// A named check with its numbers, in the JSON.
#[derive(Serialize)]
struct Check {
    check: String,
    pass: bool,
    detail: String,
}

/// The `--json` output of `table2`.
#[derive(Serialize)]
struct Table2Json {
    table: u32,
    images: usize,
    set: &'static str,
    zoo_seed: u64,
    search_steps: usize,
    noise_seed: u64,
    models: Vec<String>,
    model_test_errors: Vec<f32>,
    rows: Vec<RowJson>,
    fgsm_rows: Vec<RowJson>,
    controls: Vec<RowJson>,
    checks: Vec<Check>,
    wall_seconds: f64,
    threads: usize,
}

/// The `--json` output of `table34`.
#[derive(Serialize)]
struct Table34Json {
    table: &'static str,
    images: usize,
    set: &'static str,
    split_seed: u64,
    search_steps: usize,
    noise_seed: u64,
    magnify_to: f64,
    table3: Vec<Table3Row>,
    table4_distorted: Vec<RowJson>,
    table4_magnified: Vec<RowJson>,
    gaussian: [RowJson; 2],
    controls: Vec<RowJson>,
    checks: Vec<Check>,
    wall_seconds: f64,
    threads: usize,
}

/// A row of Table 3: one model, its training half and its errors.
#[derive(Serialize)]
struct Table3Row {
    model: &'static str,
    zoo_name: &'static str,
    seed: u64,
    data: String,
    error_p1: f32,
    error_p2: f32,
    test_error: f32,
    paper_train_error_pct: f64,
    paper_test_error_pct: f64,
}

fn errors_on(
    models: &[&Network],
    xs: &Array2<f32>,
    labels: &[usize],
) -> Result<Vec<f32>, blindspot::Error> {
    models
        .iter()
        .map(|m| transfer_error(*m, xs.view(), labels))
        .collect()
}

fn mean_distortion(xs: &Array2<f32>, img: &Images) -> Result<f64, blindspot::Error> {
    let mut sum = 0.0;
    for (a, b) in xs.rows().into_iter().zip(img.xs.rows()) {
        sum += blindspot::attack::distortion(b, a)?;
    }
    Ok(sum / img.len() as f64)
}

/// Adversarial examples for `model` on every image, with the attack's figures: `success` and
/// `evaluations` over all images, `summary` over the searched ones.
struct Made {
    adv: Array2<f32>,
    distortions: Vec<f64>,
    success: f64,
    seconds: f64,
    evaluations: f64,
    summary: OutcomeSummary,
}

fn make_adversarial(model: &Network, img: &Images, c: &Common) -> Result<Made, blindspot::Error> {
    make_with(
        &BoxLbfgsParams::default()
            .with_search_steps(c.search_steps)
            .check()?,
        model,
        img,
    )
}

/// The one-step contrast: FGSM along the gradient's sign at the smallest ε that succeeds.
fn make_fgsm(model: &Network, img: &Images) -> Result<Made, blindspot::Error> {
    make_with(&Fgsm::searched(1.0, 20)?, model, img)
}

fn make_with<A: Attack>(
    attack: &A,
    model: &Network,
    img: &Images,
) -> Result<Made, blindspot::Error> {
    let targets = vec![Target::Untargeted; img.len()];
    let t = Instant::now();
    let outs = attack.attack_batch(model, img.xs.view(), &img.labels, &targets)?;
    let seconds = t.elapsed().as_secs_f64();
    let mut adv = Array2::zeros(img.xs.raw_dim());
    for (mut row, o) in adv.rows_mut().into_iter().zip(&outs) {
        row.assign(&o.adversarial);
    }
    let n = img.len() as f64;
    Ok(Made {
        adv,
        distortions: outs.iter().map(|o| o.distortion).collect(),
        success: outs.iter().filter(|o| o.success).count() as f64 / n,
        seconds,
        evaluations: outs.iter().map(|o| o.evaluations).sum::<usize>() as f64 / n,
        summary: OutcomeSummary::of(&outs),
    })
}

/// Clipped Gaussian noise of nominal `stddev` on every image.
fn noise_rows(img: &Images, c: &Common, stddev: f64) -> Result<Array2<f32>, blindspot::Error> {
    let g = GaussianNoise::new(stddev)?;
    let mut out = Array2::zeros(img.xs.raw_dim());
    for (i, mut row) in out.rows_mut().into_iter().enumerate() {
        row.assign(&g.perturb(img.xs.row(i), noise_seed(c, i))?);
    }
    Ok(out)
}

/// Clipped Gaussian noise scaled per image to the given distortions.
fn matched_noise(img: &Images, c: &Common, dist: &[f64]) -> Result<Array2<f32>, blindspot::Error> {
    let mut out = Array2::zeros(img.xs.raw_dim());
    for (i, mut row) in out.rows_mut().into_iter().enumerate() {
        row.assign(&GaussianNoise::matching(
            img.xs.row(i),
            dist[i],
            noise_seed(c, i),
        )?);
    }
    Ok(out)
}

fn pct(v: f64) -> String {
    format!("{:.1}%", 100.0 * v)
}

/// A markdown table: ours (paper) per cell. A paper row holds its cells then the distortion;
/// columns beyond its cells (models the paper did not have) show ours alone.
fn print_table(title: &str, models: &[String], rows: &[(&Row, Option<&[f64]>)], dist_label: &str) {
    println!("\n### {title}\n");
    println!(
        "| rows = examples made for / columns = error of | {} | {dist_label} |",
        models.join(" | ")
    );
    println!("|---|{}---|", "---|".repeat(models.len()));
    for (row, paper) in rows {
        let cells: Vec<String> = row
            .errors
            .iter()
            .enumerate()
            .map(|(j, &e)| match paper {
                Some(p) if j + 1 < p.len() => format!("{} ({}%)", pct(e as f64), p[j]),
                _ => pct(e as f64),
            })
            .collect();
        let d = match paper.and_then(|p| p.last()) {
            Some(pd) => format!("{:.3} ({pd})", row.mean_distortion),
            None => format!("{:.3}", row.mean_distortion),
        };
        println!("| {} | {} | {d} |", row.name, cells.join(" | "));
    }
}

/// Prints how many images each adversarial row's source model already misclassified (kept in
/// the row with a zero perturbation, and in its av. distortion), and the mean distortion over
/// the others.
fn print_already(rows: &[Row]) {
    let parts: Vec<String> = rows
        .iter()
        .filter_map(|r| match r.extra {
            Extra::Attack {
                already_misclassified,
                searched_mean_distortion,
                ..
            } => Some(format!(
                "{}: {already_misclassified} (others' mean distortion {searched_mean_distortion:.3})",
                r.name
            )),
            _ => None,
        })
        .collect();
    println!(
        "\nImages the source model already misclassifies (not searched, zero perturbation, in the \
         row and its av. distortion): {}",
        parts.join("; ")
    );
}

/// A named check with its numbers; printed, collected, never fatal.
fn check(checks: &mut Vec<Check>, name: &str, pass: bool, detail: String) {
    println!("- {} {name}: {detail}", if pass { "PASS" } else { "FAIL" });
    checks.push(Check {
        check: name.to_string(),
        pass,
        detail,
    });
}

fn mean(v: impl IntoIterator<Item = f64>) -> f64 {
    let (s, n) = v
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    s / n.max(1) as f64
}

/// "Well above": at least twice the noise's error and at least 2 percentage points more.
fn well_above(adv: f64, noise: f64) -> bool {
    adv >= 2.0 * noise && adv - noise >= 0.02
}

/// Paper's Table 2 rows (percent, then av. distortion), in TABLE1 order.
const PAPER_T2: [[f64; 7]; 6] = [
    [100.0, 11.7, 22.7, 2.0, 3.9, 2.7, 0.062],
    [87.1, 100.0, 35.2, 35.9, 27.3, 9.8, 0.1],
    [71.9, 76.2, 100.0, 48.1, 47.0, 34.4, 0.14],
    [28.9, 13.7, 21.1, 100.0, 6.6, 8.0, 0.058],
    [38.2, 14.0, 23.8, 20.3, 100.0, 9.4, 0.065],
    [23.4, 16.0, 24.8, 9.4, 6.6, 100.0, 0.086],
];
const PAPER_T2_NOISE: [(f64, [f64; 7]); 2] = [
    (0.1, [5.0, 10.1, 18.3, 0.0, 0.0, 0.8, 0.1]),
    (0.3, [15.6, 11.3, 22.7, 5.0, 4.3, 3.1, 0.3]),
];

fn table2(c: &Common) -> Result<Table2Json, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mnist = Mnist::load_default()?;
    let img = Images::new(&mnist, c);
    let zoo = Zoo::new();
    // The paper's six models, and the zoo's convnet as a seventh row and column (the paper
    // has no figures for it).
    let names: Vec<String> = TABLE1_AND_CONV.iter().map(|s| s.to_string()).collect();
    let mut entries = Vec::new();
    for name in &names {
        let e = zoo.model(name, c.seed, &mnist.train, "mnist-train")?;
        eprintln!(
            "{name}: {} ({:.0} s of training)",
            if e.from_cache {
                "from cache"
            } else {
                "trained"
            },
            e.train_seconds
        );
        entries.push(e);
    }
    let models: Vec<&Network> = entries.iter().map(|e| &e.model).collect();
    let test_errors: Vec<f32> = models
        .iter()
        .map(|m| error_rate(*m, &mnist.test))
        .collect::<Result<_, _>>()?;

    let clean = Row {
        name: format!("clean {} images (no perturbation)", img.set),
        errors: errors_on(&models, &img.xs, &img.labels)?,
        mean_distortion: 0.0,
        extra: Extra::None,
    };
    let mut adv_rows = Vec::new();
    let mut control_rows = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let made = make_adversarial(models[k], &img, c)?;
        eprintln!(
            "{name}: {} images attacked in {:.1} s ({:.0} evaluations/image), success {:.1}%, {} already misclassified (mean distortion over the others {:.4})",
            img.len(),
            made.seconds,
            made.evaluations,
            100.0 * made.success,
            made.summary.already_adversarial,
            made.summary.mean_distortion
        );
        let errors = errors_on(&models, &made.adv, &img.labels)?;
        let noise = matched_noise(&img, c, &made.distortions)?;
        adv_rows.push(Row {
            name: name.clone(),
            errors,
            mean_distortion: mean(made.distortions.iter().copied()),
            extra: Extra::attack(&made, true),
        });
        control_rows.push(Row {
            name: format!("noise matched to {name}'s distortions"),
            errors: errors_on(&models, &noise, &img.labels)?,
            mean_distortion: mean_distortion(&noise, &img)?,
            extra: Extra::None,
        });
    }
    // FGSM rows, each at its own (larger) mean distortion, beside box L-BFGS's.
    let mut fgsm_rows = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let made = make_fgsm(models[k], &img)?;
        fgsm_rows.push(Row {
            name: format!("FGSM on {name}"),
            errors: errors_on(&models, &made.adv, &img.labels)?,
            mean_distortion: mean(made.distortions.iter().copied()),
            extra: Extra::attack(&made, false),
        });
    }
    let mut noise_rows_out = Vec::new();
    for (stddev, _) in PAPER_T2_NOISE {
        let xs = noise_rows(&img, c, stddev)?;
        noise_rows_out.push(Row {
            name: format!("Gaussian noise, stddev={stddev}"),
            errors: errors_on(&models, &xs, &img.labels)?,
            mean_distortion: mean_distortion(&xs, &img)?,
            extra: Extra::Noise { stddev },
        });
    }

    println!(
        "## Table 2: cross-model generalisation ({} {} images, untargeted box L-BFGS, {} c-bisection steps, zoo seed {})",
        img.len(),
        img.set,
        c.search_steps,
        c.seed
    );
    println!("\nOurs (paper in parentheses). Cells: error rate of the column model on the row's examples.");
    let mut table: Vec<(&Row, Option<&[f64]>)> = adv_rows
        .iter()
        .enumerate()
        .map(|(k, r)| (r, PAPER_T2.get(k).map(|p| &p[..])))
        .collect();
    for (r, (_, p)) in noise_rows_out.iter().zip(PAPER_T2_NOISE.iter()) {
        table.push((r, Some(&p[..])));
    }
    print_table("Table 2", &names, &table, "av. distortion");
    print_already(&adv_rows);
    let mut ctrl: Vec<(&Row, Option<&[f64]>)> = vec![(&clean, None)];
    ctrl.extend(control_rows.iter().map(|r| (r, None)));
    print_table(
        "Controls: clean error on the attacked images, and Gaussian noise at each row's distortions",
        &names,
        &ctrl,
        "av. distortion",
    );

    print_table(
        "FGSM rows (one signed-gradient step, smallest succeeding ε along it, untargeted)",
        &names,
        &fgsm_rows.iter().map(|r| (r, None)).collect::<Vec<_>>(),
        "av. distortion",
    );
    print_already(&fgsm_rows);

    println!("\n### Checks\n");
    let mut checks = Vec::new();
    let off = |rows: &[Row], k: usize| {
        mean(
            (0..names.len())
                .filter(|&j| j != k)
                .map(|j| rows[k].errors[j] as f64),
        )
    };
    for (k, name) in names.iter().enumerate() {
        let (a, n) = (off(&adv_rows, k), off(&control_rows, k));
        check(
            &mut checks,
            &format!("examples for {name} transfer well above equal-distortion noise"),
            well_above(a, n),
            format!(
                "mean error of the other models {} vs {} on noise of the same distortion ({:.3})",
                pct(a),
                pct(n),
                adv_rows[k].mean_distortion
            ),
        );
    }
    let all_adv = mean((0..names.len()).map(|k| off(&adv_rows, k)));
    let all_noise = mean((0..names.len()).map(|k| off(&control_rows, k)));
    check(
        &mut checks,
        "all off-diagonal cells together well above equal-distortion noise",
        well_above(all_adv, all_noise),
        format!("{} vs {}", pct(all_adv), pct(all_noise)),
    );
    let noise01 = mean(noise_rows_out[0].errors.iter().map(|&e| e as f64));
    check(
        &mut checks,
        "off-diagonal cells well above the paper's stddev-0.1 noise row",
        well_above(all_adv, noise01),
        format!(
            "{} vs {} (noise of measured distortion {:.3}, above every adversarial row's)",
            pct(all_adv),
            pct(noise01),
            noise_rows_out[0].mean_distortion
        ),
    );
    let diag: Vec<f64> = (0..names.len())
        .map(|k| adv_rows[k].errors[k] as f64)
        .collect();
    check(
        &mut checks,
        "diagonal (attack success on its own model) is 100%",
        diag.iter().all(|&d| d >= 0.999),
        format!("{:?}", diag.iter().map(|&d| pct(d)).collect::<Vec<_>>()),
    );
    let wall = start.elapsed().as_secs_f64();
    println!(
        "\nwall time: {wall:.0} s, {} threads",
        rayon::current_num_threads()
    );

    let rows_json: Vec<RowJson> = adv_rows
        .iter()
        .zip(PAPER_T2.iter())
        .map(|(r, p)| r.json(&names, Some(&p[..])))
        .chain(
            noise_rows_out
                .iter()
                .zip(PAPER_T2_NOISE.iter())
                .map(|(r, (_, p))| r.json(&names, Some(&p[..]))),
        )
        .collect();
    Ok(Table2Json {
        table: 2,
        images: img.len(),
        set: img.set,
        zoo_seed: c.seed,
        search_steps: c.search_steps,
        noise_seed: c.noise_seed,
        models: names.clone(),
        model_test_errors: test_errors,
        rows: rows_json,
        fgsm_rows: fgsm_rows.iter().map(|r| r.json(&names, None)).collect(),
        controls: std::iter::once(&clean)
            .chain(control_rows.iter())
            .map(|r| r.json(&names, None))
            .collect(),
        checks,
        wall_seconds: wall,
        threads: rayon::current_num_threads(),
    })
}

/// Paper's Table 3: (train error, test error) in percent.
const PAPER_T3: [(f64, f64); 3] = [(0.0, 2.0), (0.0, 1.8), (0.0, 1.9)];
/// Paper's Table 4, distorted examples: errors (percent) then av. stddev.
const PAPER_T4: [[f64; 4]; 4] = [
    [100.0, 26.2, 5.9, 0.062],
    [6.25, 100.0, 5.1, 0.059],
    [8.2, 8.2, 100.0, 0.058],
    [2.2, 2.6, 2.4, 0.06],
];
/// Paper's Table 4, magnified to stddev 0.1.
const PAPER_T4_MAG: [[f64; 4]; 4] = [
    [100.0, 98.0, 43.0, 0.1],
    [96.0, 100.0, 22.0, 0.1],
    [27.0, 50.0, 100.0, 0.1],
    [2.6, 2.8, 2.7, 0.1],
];

fn table34(
    c: &Common,
    split_seed: u64,
    magnify_to: f64,
) -> Result<Table34Json, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mnist = Mnist::load_default()?;
    let (p1, p2) = mnist.train.split(30_000, split_seed)?;
    let (t1, t2) = (
        format!("P1-seed{split_seed}"),
        format!("P2-seed{split_seed}"),
    );
    let zoo = Zoo::new();
    let specs: [(&str, &str, u64, &Dataset, &str); 3] = [
        ("FC100-100-10", "FC100-100-10", c.seed, &p1, &t1),
        ("FC123-456-10", "FC123-456-10", c.seed, &p1, &t1),
        ("FC100-100-10'", "FC100-100-10", c.seed + 1, &p2, &t2),
    ];
    let mut entries = Vec::new();
    for (label, zoo_name, seed, data, tag) in specs {
        let e = zoo.model(zoo_name, seed, data, tag)?;
        eprintln!(
            "{label} ({zoo_name}, seed {seed}, {tag}): {} ({:.0} s of training)",
            if e.from_cache {
                "from cache"
            } else {
                "trained"
            },
            e.train_seconds
        );
        entries.push(e);
    }
    let names: Vec<String> = specs.iter().map(|s| s.0.to_string()).collect();
    let models: Vec<&Network> = entries.iter().map(|e| &e.model).collect();

    // Table 3.
    let mut t3 = Vec::new();
    println!(
        "## Table 3: models trained on disjoint halves (split seed {split_seed}, 30,000 images each)\n"
    );
    println!(
        "| model | trained on | error on P1 | error on P2 | test error | paper train / test |"
    );
    println!("|---|---|---|---|---|---|");
    for (k, (label, zoo_name, seed, _, tag)) in specs.iter().enumerate() {
        let e1 = error_rate(models[k], &p1)?;
        let e2 = error_rate(models[k], &p2)?;
        let et = error_rate(models[k], &mnist.test)?;
        println!(
            "| {label} | {tag} | {} | {} | {} | {}% / {}% |",
            pct(e1 as f64),
            pct(e2 as f64),
            pct(et as f64),
            PAPER_T3[k].0,
            PAPER_T3[k].1
        );
        t3.push(Table3Row {
            model: label,
            zoo_name,
            seed: *seed,
            data: tag.to_string(),
            error_p1: e1,
            error_p2: e2,
            test_error: et,
            paper_train_error_pct: PAPER_T3[k].0,
            paper_test_error_pct: PAPER_T3[k].1,
        });
    }

    // Table 4.
    let img = Images::new(&mnist, c);
    let clean = Row {
        name: format!("clean {} images (no perturbation)", img.set),
        errors: errors_on(&models, &img.xs, &img.labels)?,
        mean_distortion: 0.0,
        extra: Extra::None,
    };
    let (mut dist_rows, mut mag_rows, mut ctrl_rows, mut ctrl_mag_rows) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, name) in names.iter().enumerate() {
        let made = make_adversarial(models[k], &img, c)?;
        eprintln!(
            "{name}: {} images attacked in {:.1} s ({:.0} evaluations/image), success {:.1}%, {} already misclassified (mean distortion over the others {:.4})",
            img.len(),
            made.seconds,
            made.evaluations,
            100.0 * made.success,
            made.summary.already_adversarial,
            made.summary.mean_distortion
        );
        // Magnify every perturbation to the common distortion; a zero perturbation (an image
        // the source model already misclassifies) has no direction and is kept as it is.
        let mut mag = made.adv.clone();
        let mut kept = 0usize;
        for (i, mut row) in mag.rows_mut().into_iter().enumerate() {
            match magnify(img.xs.row(i), made.adv.row(i), magnify_to) {
                Ok(v) => row.assign(&v),
                Err(_) => kept += 1,
            }
        }
        let magnified_dist = mean_distortion(&mag, &img)?;
        dist_rows.push(Row {
            name: format!("distorted for {name}"),
            errors: errors_on(&models, &made.adv, &img.labels)?,
            mean_distortion: mean(made.distortions.iter().copied()),
            extra: Extra::attack(&made, true),
        });
        mag_rows.push(Row {
            name: format!("magnified for {name}"),
            errors: errors_on(&models, &mag, &img.labels)?,
            mean_distortion: magnified_dist,
            extra: Extra::Magnified {
                not_magnified_zero_perturbation: kept,
            },
        });
        let noise = matched_noise(&img, c, &made.distortions)?;
        ctrl_rows.push(Row {
            name: format!("noise matched to {name}'s distortions"),
            errors: errors_on(&models, &noise, &img.labels)?,
            mean_distortion: mean_distortion(&noise, &img)?,
            extra: Extra::None,
        });
    }
    let noise_mag = matched_noise(&img, c, &vec![magnify_to; img.len()])?;
    ctrl_mag_rows.push(Row {
        name: format!("noise matched to distortion {magnify_to}"),
        errors: errors_on(&models, &noise_mag, &img.labels)?,
        mean_distortion: mean_distortion(&noise_mag, &img)?,
        extra: Extra::None,
    });
    let mut gauss = Vec::new();
    for stddev in [0.06, 0.1] {
        let xs = noise_rows(&img, c, stddev)?;
        gauss.push(Row {
            name: format!("Gaussian noise, stddev={stddev}"),
            errors: errors_on(&models, &xs, &img.labels)?,
            mean_distortion: mean_distortion(&xs, &img)?,
            extra: Extra::Noise { stddev },
        });
    }

    println!(
        "\n## Table 4: cross-training-set generalisation ({} {} images, untargeted box L-BFGS, {} c-bisection steps)",
        img.len(),
        img.set,
        c.search_steps
    );
    let mut a: Vec<(&Row, Option<&[f64]>)> = dist_rows
        .iter()
        .zip(PAPER_T4.iter())
        .map(|(r, p)| (r, Some(&p[..])))
        .collect();
    a.push((&gauss[0], Some(&PAPER_T4[3][..])));
    print_table(
        "Distorted (minimal adversarial examples)",
        &names,
        &a,
        "av. stddev",
    );
    print_already(&dist_rows);
    let mut b: Vec<(&Row, Option<&[f64]>)> = mag_rows
        .iter()
        .zip(PAPER_T4_MAG.iter())
        .map(|(r, p)| (r, Some(&p[..])))
        .collect();
    b.push((&gauss[1], Some(&PAPER_T4_MAG[3][..])));
    print_table(
        &format!("Magnified to distortion {magnify_to}"),
        &names,
        &b,
        "av. stddev",
    );
    let mut ctrl: Vec<(&Row, Option<&[f64]>)> = vec![(&clean, None)];
    ctrl.extend(ctrl_rows.iter().map(|r| (r, None)));
    ctrl.extend(ctrl_mag_rows.iter().map(|r| (r, None)));
    print_table(
        "Controls: clean error, and noise of equal distortion",
        &names,
        &ctrl,
        "av. distortion",
    );

    println!("\n### Checks\n");
    let mut checks = Vec::new();
    // Same training set: FC100-100-10 <-> FC123-456-10 (both P1). Cross: anything with the
    // P2 model.
    let same = [(0usize, 1usize), (1, 0)];
    let cross = [(0usize, 2usize), (1, 2), (2, 0), (2, 1)];
    for (kind, rows, ctrl) in [
        (
            "distorted",
            &dist_rows,
            ctrl_rows.iter().collect::<Vec<_>>(),
        ),
        ("magnified", &mag_rows, vec![&ctrl_mag_rows[0]; 3]),
    ] {
        let s = mean(same.iter().map(|&(r, col)| rows[r].errors[col] as f64));
        let x = mean(cross.iter().map(|&(r, col)| rows[r].errors[col] as f64));
        let xn = mean(cross.iter().map(|&(r, col)| ctrl[r].errors[col] as f64));
        check(
            &mut checks,
            &format!("{kind}: cross-training-set transfer lower than same-set transfer"),
            x < s,
            format!("cross-set mean {} vs same-set mean {}", pct(x), pct(s)),
        );
        check(
            &mut checks,
            &format!("{kind}: cross-training-set transfer well above equal-distortion noise"),
            well_above(x, xn),
            format!("cross-set mean {} vs noise {}", pct(x), pct(xn)),
        );
    }
    let wall = start.elapsed().as_secs_f64();
    println!(
        "\nwall time: {wall:.0} s, {} threads",
        rayon::current_num_threads()
    );

    let j = |rows: &[Row], paper: Option<&[[f64; 4]; 4]>| -> Vec<RowJson> {
        rows.iter()
            .enumerate()
            .map(|(k, r)| r.json(&names, paper.map(|p| &p[k.min(3)][..])))
            .collect()
    };
    Ok(Table34Json {
        table: "3-4",
        images: img.len(),
        set: img.set,
        split_seed,
        search_steps: c.search_steps,
        noise_seed: c.noise_seed,
        magnify_to,
        table3: t3,
        table4_distorted: j(&dist_rows, Some(&PAPER_T4)),
        table4_magnified: j(&mag_rows, Some(&PAPER_T4_MAG)),
        gaussian: [
            gauss[0].json(&names, Some(&PAPER_T4[3][..])),
            gauss[1].json(&names, Some(&PAPER_T4_MAG[3][..])),
        ],
        controls: std::iter::once(&clean)
            .chain(ctrl_rows.iter())
            .chain(ctrl_mag_rows.iter())
            .map(|r| r.json(&names, None))
            .collect(),
        checks,
        wall_seconds: wall,
        threads: rayon::current_num_threads(),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::Table2 { common } => write_json(common.json.as_deref(), &table2(common)?),
        Cmd::Table34 {
            common,
            split_seed,
            magnify_to,
        } => write_json(
            common.json.as_deref(),
            &table34(common, *split_seed, *magnify_to)?,
        ),
    }
}

/// Writes `out` as pretty JSON to `path`, if there is one.
fn write_json(
    path: Option<&std::path::Path>,
    out: &impl Serialize,
) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = path {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_string_pretty(out)?)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
