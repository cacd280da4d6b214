//! The real MNIST files in `../shared/data/mnist` load as the canonical dataset.
//!
//! Checks the sha256 of each decompressed payload against the table in that folder's SOURCE.md
//! (other copies of MNIST differ only in the gzip wrapper), then the loader's shapes and known
//! statistics. Skips with a message when the folder is absent.
use std::io::Read;
use std::path::Path;

use anyhow::{ensure, Context, Result};
use sha2::{Digest, Sha256};
use tch::Kind;
use zoo_core::data::mnist::{Mnist, Split};

/// sha256 of the decompressed files, from SOURCE.md.
const PAYLOAD_SHA256: [(&str, &str); 4] = [
    ("train-images-idx3-ubyte.gz", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    ("train-labels-idx1-ubyte.gz", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    ("t10k-images-idx3-ubyte.gz", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    ("t10k-labels-idx1-ubyte.gz", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
];

/// Images per digit 0..=9, the published class counts of MNIST.
const TRAIN_COUNTS: [i64; 10] = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949];
const TEST_COUNTS: [i64; 10] = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009];

fn mnist_dir() -> Option<std::path::PathBuf> {
    let dir = zoo_tests::shared_data_dir()?.join("mnist");
    dir.is_dir().then_some(dir)
}

fn payload_sha256(path: &Path) -> Result<String> {
    let file = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut gz = flate2::read::GzDecoder::new(std::io::BufReader::new(file));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let k = gz.read(&mut buf).with_context(|| path.display().to_string())?;
        if k == 0 {
            break;
        }
        hasher.update(&buf[..k]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn histogram(labels: &tch::Tensor) -> Result<Vec<i64>> {
    let counts = labels.f_bincount(None::<tch::Tensor>, 10)?;
    Ok(Vec::<i64>::try_from(&counts)?)
}

#[test]
fn payloads_match_source_md() -> Result<()> {
    let Some(dir) = mnist_dir() else {
        eprintln!("skipped: ../shared/data/mnist not found");
        return Ok(());
    };
    for (name, want) in PAYLOAD_SHA256 {
        let got = payload_sha256(&dir.join(name))?;
        ensure!(got == want, "{name}: decompressed sha256 {got}, SOURCE.md says {want}");
    }
    Ok(())
}

#[test]
fn loads_both_splits() -> Result<()> {
    let Some(dir) = mnist_dir() else {
        eprintln!("skipped: ../shared/data/mnist not found");
        return Ok(());
    };
    let train = Mnist::load(&dir, Split::Train)?;
    ensure!(train.images.size() == [60000, 1, 28, 28], "train images {:?}", train.images.size());
    ensure!(train.labels.size() == [60000], "train labels {:?}", train.labels.size());
    ensure!(train.images.kind() == Kind::Uint8 && train.labels.kind() == Kind::Int64);
    ensure!(train.labels.int64_value(&[0]) == 5, "first training label is 5");
    let counts = histogram(&train.labels)?;
    ensure!(counts.iter().sum::<i64>() == 60000, "{counts:?}");
    ensure!(counts == TRAIN_COUNTS, "train label histogram {counts:?}");

    // The usual normalisation constant: mean pixel 0.1307 in [0, 1].
    let mean = train.images.to_kind(Kind::Double).mean(Kind::Double).double_value(&[]) / 255.0;
    ensure!((mean - 0.1307).abs() < 1e-4, "train pixel mean {mean}");
    let f = train.images_f32();
    ensure!(f.min().double_value(&[]) == -1.0 && f.max().double_value(&[]) == 1.0);

    let test = Mnist::load(&dir, Split::Test)?;
    ensure!(test.images.size() == [10000, 1, 28, 28], "test images {:?}", test.images.size());
    ensure!(test.labels.int64_value(&[0]) == 7, "first test label is 7");
    let counts = histogram(&test.labels)?;
    ensure!(counts.iter().sum::<i64>() == 10000, "{counts:?}");
    ensure!(counts == TEST_COUNTS, "test label histogram {counts:?}");
    Ok(())
}
