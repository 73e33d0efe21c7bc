//! The paper's Table 1: for each model, its training and test error and the mean minimal
//! distortion of the adversarial examples that box-constrained L-BFGS finds for it.
//!
//! ```text
//! cargo run --release --example table1 -- --images 1000 --json out/table1.json
//! cargo run --release --example table1 -- --models "FC100-100-10,AE400-10" --set test --images 200
//! ```
//!
//! Models come from the zoo cache (trained on first use). By default each image gets the
//! untargeted attack, the smallest perturbation over all nine other labels, on training images
//! as in the paper. Each model also gets an FGSM row (`attack::Fgsm::searched`: one
//! signed-gradient step, the smallest ε that succeeds along it) at its own mean distortion, the
//! one-step contrast.
//!
//! An image the model already misclassifies (with `--target next` or `random`: already labels
//! as the target) needs no perturbation: the attack returns it unsearched
//! (`Outcome::already_adversarial`). Such images are counted per model ("already wrong",
//! `already_misclassified` in the JSON, their indices in `already_misclassified_images`) and
//! left out of every mean: the mean distortion, success rate, ms/image and evals/image of box
//! L-BFGS and of FGSM are over the images actually searched (`attack::OutcomeSummary`), so a
//! model's own training error does not pull its mean distortion towards 0. The per-image
//! `min_distortions` keep every image, 0 for the already misclassified ones: the
//! robust-accuracy curve counts them as not robust at any ε (each curve starts at the model's
//! accuracy on these images), while the distortion histogram leaves them out.

use blindspot::Check;
use std::path::PathBuf;
use std::time::Instant;

use blindspot::attack::{Attack, BoxLbfgsParams, Fgsm, OutcomeSummary, Target};
use blindspot::data::Mnist;
use blindspot::image::Grid;
use blindspot::nn::error_rate;
use blindspot::zoo::{paper_errors, Zoo, TABLE1_AND_CONV};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Set {
    Train,
    Test,
}

#[derive(Clone, Copy, ValueEnum)]
enum Aim {
    /// The smallest perturbation over every other label.
    Untargeted,
    /// The label after the true one, (y + 1) mod 10.
    Next,
    /// A label drawn per image from a seed.
    Random,
}

#[derive(Parser)]
#[command(about = "Reproduce Table 1 of Szegedy et al. (2013)")]
struct Args {
    /// Comma-separated model names (default: the six Table 1 models and the zoo's convnet).
    #[arg(long)]
    models: Option<String>,
    /// Images attacked per model.
    #[arg(long, default_value_t = 1000)]
    images: usize,
    /// Which set the attacked images come from.
    #[arg(long, value_enum, default_value_t = Set::Train)]
    set: Set,
    /// Which label the attack aims at.
    #[arg(long, value_enum, default_value_t = Aim::Untargeted)]
    target: Aim,
    /// Bisection steps of the search over c.
    #[arg(long, default_value_t = 5)]
    search_steps: usize,
    /// Seed of the zoo models (and of random targets).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write every figure as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Directory for the PNG grids (original | adversarial | perturbation magnified).
    #[arg(long, default_value = "out/table1")]
    png_dir: PathBuf,
    /// Also draw the robust-accuracy curves and the distortion histograms (SVG and PNG) into
    /// this directory (needs `--features plot`).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Draw the figures from a JSON this example wrote (with `--plots`), without attacking.
    #[arg(long)]
    replot: Option<PathBuf>,
}

/// The paper's mean minimal distortion per model (Table 1).
fn paper_distortion(name: &str) -> Option<f64> {
    Some(match name {
        "FC10(1e-4)" => 0.062,
        "FC10(1e-2)" => 0.1,
        "FC10(1)" => 0.14,
        "FC100-100-10" => 0.058,
        "FC200-200-10" => 0.065,
        "AE400-10" => 0.086,
        _ => return None,
    })
}

/// The robust-accuracy curves and distortion histograms of `rows` (each with its model's
/// per-image minimal distortions, `null` where the attack failed) into `dir`. The curves take
/// every image (an image already misclassified, at distortion 0, is robust at no ε); the
/// histograms only the images searched.
#[cfg(feature = "plot")]
fn plots(rows: &[Distortions], dir: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    use blindspot::plot::{distortion_histogram, robust_accuracy};
    let per_image = |r: &Distortions, searched_only: bool| -> Vec<f64> {
        r.min_distortions
            .iter()
            .enumerate()
            .filter(|(i, _)| !(searched_only && r.already_misclassified_images.contains(i)))
            .map(|(_, d)| d.unwrap_or(f64::INFINITY))
            .collect()
    };
    let of = |searched_only: bool| -> Vec<(String, Vec<f64>)> {
        rows.iter()
            .map(|r| (r.model.clone(), per_image(r, searched_only)))
            .filter(|(_, d)| !d.is_empty())
            .collect()
    };
    let (all, searched) = (of(false), of(true));
    if all.is_empty() {
        return Err("no row has per-image distortions (\"min_distortions\") to plot".into());
    }
    robust_accuracy(
        "Table 1 models: accuracy under the untargeted attack, by distortion",
        &all,
        0.15,
        150,
    )?
    .save(dir, "robust_accuracy")?;
    distortion_histogram(
        "Table 1 models: minimal distortions of the images not already misclassified",
        &searched,
        40,
    )?
    .save(dir, "distortion_histogram")?;
    println!("figures written to {}", dir.display());
    Ok(())
}

#[cfg(not(feature = "plot"))]
fn plots(_: &[Distortions], _: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    Err(
        "--plots needs the plot feature: cargo run --release --features plot --example table1"
            .into(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if let Some(path) = &args.replot {
        let dir = args.plots.as_ref().ok_or("--replot needs --plots DIR")?;
        let file: DistortionsFile = serde_json::from_slice(&std::fs::read(path)?)?;
        return plots(&file.rows, dir);
    }
    if args.plots.is_some() && !cfg!(feature = "plot") {
        return Err("--plots needs the plot feature: add --features plot".into());
    }
    let start_all = Instant::now();
    let mnist = Mnist::load_default()?;
    let names: Vec<String> = match &args.models {
        Some(list) => list.split(',').map(|s| s.trim().to_string()).collect(),
        None => TABLE1_AND_CONV.iter().map(|s| s.to_string()).collect(),
    };
    let set = match args.set {
        Set::Train => &mnist.train,
        Set::Test => &mnist.test,
    };
    let n = args.images.min(set.len());
    let xs = set.images().slice(ndarray::s![..n, ..]).to_owned();
    let labels = &set.labels()[..n];
    let targets: Vec<Target> = (0..n)
        .map(|i| match args.target {
            Aim::Untargeted => Target::Untargeted,
            Aim::Next => Target::Label((labels[i] + 1) % 10),
            Aim::Random => Target::Random {
                seed: args.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            },
        })
        .collect();
    let attack = BoxLbfgsParams::default()
        .with_search_steps(args.search_steps)
        .check()?;
    // The one-step contrast: along the sign of the gradient, the smallest ε (to 1e-6) that
    // succeeds, so it too has a minimal distortion of its own.
    let fgsm = Fgsm::searched(1.0, 20)?;
    let zoo = Zoo::new();
    std::fs::create_dir_all(&args.png_dir)?;

    let mut rows = Vec::new();
    for name in &names {
        let entry = zoo.model(name, args.seed, &mnist.train, "mnist-train")?;
        let model = &entry.model;
        let train_error = error_rate(model, &mnist.train)?;
        let test_error = error_rate(model, &mnist.test)?;
        let t = Instant::now();
        let outs = attack.attack_batch(model, xs.view(), labels, &targets)?;
        let seconds = t.elapsed().as_secs_f64();
        // Means over the images searched: those the model already misclassifies are counted
        // apart (see the module docs).
        let summary = OutcomeSummary::of(&outs);
        let searched = summary.searched.max(1) as f64;
        let t = Instant::now();
        let fgsm_outs = fgsm.attack_batch(model, xs.view(), labels, &targets)?;
        let fgsm_seconds = t.elapsed().as_secs_f64();
        let fgsm_summary = OutcomeSummary::of(&fgsm_outs);
        // Both attacks mark the same images (one clean forward pass, the same aims).
        let already: Vec<usize> = (0..n).filter(|&i| outs[i].already_adversarial).collect();
        if (0..n).any(|i| fgsm_outs[i].already_adversarial != outs[i].already_adversarial) {
            return Err(format!("{name}: FGSM and box L-BFGS disagree on which images the model already misclassifies").into());
        }
        let mut grid = Grid::new(28, 28, 3)?.try_with_scale(2)?;
        for (i, o) in outs.iter().take(10).enumerate() {
            grid.push(xs.row(i))?;
            grid.push(o.adversarial.view())?;
            grid.push_perturbation(o.perturbation.view())?;
        }
        let file = name.replace(['(', ')'], "_");
        grid.save(args.png_dir.join(format!("{file}.png")))?;
        eprintln!(
            "{name}: {} ({:.1} s training), {n} images attacked in {seconds:.1} s, {} already misclassified",
            if entry.from_cache {
                "from cache"
            } else {
                "trained"
            },
            entry.train_seconds,
            summary.already_adversarial
        );
        rows.push(Row {
            model: name.clone(),
            train_error,
            test_error,
            mean_distortion: summary.mean_distortion,
            success_rate: summary.success_rate,
            images: n,
            already_misclassified: summary.already_adversarial,
            ms_per_image: 1e3 * seconds / searched,
            evaluations_per_image: summary.evaluations_per_image,
            fgsm_mean_distortion: fgsm_summary.mean_distortion,
            fgsm_success_rate: fgsm_summary.success_rate,
            fgsm_ms_per_image: 1e3 * fgsm_seconds / searched,
            paper_train_error: paper_errors(name).map(|p| p.0),
            paper_test_error: paper_errors(name).map(|p| p.1),
            paper_mean_distortion: paper_distortion(name),
            min_distortions: outs
                .iter()
                .map(|o| o.success.then_some(o.distortion))
                .collect(),
            already_misclassified_images: already,
        });
    }

    println!(
        "Table 1 ({} attack, {n} {} images per model, {} threads)\n",
        match args.target {
            Aim::Untargeted => "untargeted",
            Aim::Next => "next-label",
            Aim::Random => "random-target",
        },
        match args.set {
            Set::Train => "training",
            Set::Test => "test",
        },
        rayon::current_num_threads()
    );
    println!(
        "Images the model already misclassifies are not searched: \"already wrong\" counts them, \
         and every mean (distortion, success, ms/image, evals/image) is over the other images.\n"
    );
    println!("| model | train error (paper) | test error (paper) | already wrong | mean distortion (paper) | success | ms/image | evals/image |");
    println!("|---|---|---|---|---|---|---|---|");
    let pct = |v: Option<f32>| v.map_or("-".into(), |f| format!("{:.2}%", 100.0 * f));
    let num = |v: Option<f64>| v.map_or("-".into(), |f| format!("{f:.3}"));
    for r in &rows {
        println!(
            "| {} | {} ({}) | {} ({}) | {} of {} | {} ({}) | {:.1}% | {:.1} | {:.0} |",
            r.model,
            pct(Some(r.train_error)),
            pct(r.paper_train_error),
            pct(Some(r.test_error)),
            pct(r.paper_test_error),
            r.already_misclassified,
            r.images,
            num(Some(r.mean_distortion)),
            num(r.paper_mean_distortion),
            100.0 * r.success_rate,
            r.ms_per_image,
            r.evaluations_per_image,
        );
    }
    println!("\nFGSM rows: one signed-gradient step, the smallest ε ≤ 1 that succeeds along it (20 bisections), over the same images searched\n");
    println!(
        "| model | FGSM mean distortion | FGSM success | ms/image | box L-BFGS mean distortion |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| FGSM on {} | {} | {:.1}% | {:.2} | {} |",
            r.model,
            num(Some(r.fgsm_mean_distortion)),
            100.0 * r.fgsm_success_rate,
            r.fgsm_ms_per_image,
            num(Some(r.mean_distortion)),
        );
    }
    let total = start_all.elapsed().as_secs_f64();
    println!("\nwall time of the whole run: {total:.1} s");
    if let Some(path) = &args.json {
        let json = Table {
            rows: &rows,
            wall_seconds: total,
        };
        std::fs::write(path, serde_json::to_string_pretty(&json)?)?;
    }
    if let Some(dir) = &args.plots {
        let rows: Vec<Distortions> = rows
            .iter()
            .map(|r| Distortions {
                model: r.model.clone(),
                min_distortions: r.min_distortions.clone(),
                already_misclassified_images: r.already_misclassified_images.clone(),
            })
            .collect();
        plots(&rows, dir)?;
    }
    Ok(())
}

/// The `--json` output.
#[derive(serde::Serialize)]
struct Table<'a> {
    rows: &'a [Row],
    wall_seconds: f64,
}

/// One model's figures: a row of the table and of the `--json` output.
#[derive(serde::Serialize)]
struct Row {
    model: String,
    train_error: f32,
    test_error: f32,
    /// Over the successful searched images (not those already misclassified).
    mean_distortion: f64,
    /// Over the searched images.
    success_rate: f64,
    /// Images attacked: searched or already misclassified.
    images: usize,
    /// Images the model already misclassified (with a target: already labelled as it),
    /// returned unsearched and left out of every mean of the row.
    already_misclassified: usize,
    /// Per searched image.
    ms_per_image: f64,
    /// Per searched image.
    evaluations_per_image: f64,
    fgsm_mean_distortion: f64,
    fgsm_success_rate: f64,
    fgsm_ms_per_image: f64,
    paper_train_error: Option<f32>,
    paper_test_error: Option<f32>,
    paper_mean_distortion: Option<f64>,
    /// Per image, for the robust-accuracy curves: `null` where the attack failed, 0 where the
    /// image was already misclassified.
    min_distortions: Vec<Option<f64>>,
    /// Indices (into the attacked images) of the images already misclassified.
    already_misclassified_images: Vec<usize>,
}

/// What `--replot` reads of a `--json` file.
#[derive(serde::Deserialize)]
struct DistortionsFile {
    rows: Vec<Distortions>,
}

/// What the figures need of a row: its model, per-image minimal distortions (`null` where
/// the attack failed; absent from files written before they were kept) and the images already
/// misclassified (absent from files written before they were marked).
#[derive(serde::Deserialize)]
// Read only by the figures, which need the plot feature.
#[cfg_attr(not(feature = "plot"), allow(dead_code))]
struct Distortions {
    model: String,
    #[serde(default)]
    min_distortions: Vec<Option<f64>>,
    #[serde(default)]
    already_misclassified_images: Vec<usize>,
}
