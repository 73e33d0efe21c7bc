use blindspot::attack::{Attack, BoxLbfgs, Target};
use blindspot::data::Mnist;
use blindspot::nn::Network;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().collect();
    let model = Network::load(&a[1])?;
    let n: usize = a[2].parse()?;
    let mode = a[3].as_str(); // alone | batch
    let untargeted = a.get(4).map(|s| s == "u").unwrap_or(false);
    let mnist = Mnist::load("/work/shared/data/mnist")?;
    let train = &mnist.train;
    let xs = train.images().slice(ndarray::s![..n, ..]).to_owned();
    let labels: Vec<usize> = train.labels()[..n].to_vec();
    let targets: Vec<Target> = labels
        .iter()
        .map(|&l| {
            if untargeted {
                Target::Untargeted
            } else {
                Target::Label((l + 1) % 10)
            }
        })
        .collect();
    let attack = BoxLbfgs::default();
    let t = std::time::Instant::now();
    let outs: Vec<_> = if mode == "alone" {
        (0..n)
            .map(|i| attack.attack(&model, xs.row(i), labels[i], targets[i]))
            .collect::<Result<_, _>>()?
    } else {
        let b: usize = mode.trim_start_matches("batch").parse().unwrap_or(n);
        let mut v = Vec::new();
        for lo in (0..n).step_by(b) {
            let hi = (lo + b).min(n);
            v.extend(attack.attack_batch(
                &model,
                xs.slice(ndarray::s![lo..hi, ..]),
                &labels[lo..hi],
                &targets[lo..hi],
            )?);
        }
        v
    };
    eprintln!(
        "{:.1} ms per image",
        t.elapsed().as_secs_f64() * 1e3 / n as f64
    );
    for (i, o) in outs.iter().enumerate() {
        let h: u64 = o.adversarial.iter().fold(0u64, |h, v| {
            h.wrapping_mul(31).wrapping_add(v.to_bits() as u64)
        });
        println!(
            "{i} {} {} {:016x} {:e} {:016x} {}",
            o.success,
            o.adversarial_label,
            o.distortion.to_bits(),
            o.penalty_weight,
            h,
            o.evaluations
        );
    }
    Ok(())
}
