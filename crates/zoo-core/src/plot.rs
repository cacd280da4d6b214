//! Line charts as PNG (loss curves, metric curves), drawn with plotters.
//!
//! Text uses DejaVu Sans Mono, embedded in the binary (assets/, with its licence), so charts
//! look the same on machines without system fonts.
use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::fsutil::atomic_write_with;
use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is ours and valid; if it ever were not, charts would lose their text only.
            let _ = plotters::style::register_font(FAMILY, style, FONT);
        }
    });
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Draws named series of (x, y) points into a 900x500 PNG at `path` (written atomically).
pub fn line_chart(
    path: &Path,
    y_label: &str,
    x_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    register_font();
    let pts = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-6);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let draw = |tmp: &Path| -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = BitMapBackend::new(tmp, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x0..x1, y0..y1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 14))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()?;
        for (i, (name, points)) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart
                .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FAMILY, 14))
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    atomic_write_with(path, |tmp| {
        // The bitmap backend picks the format from the file name; keep ".png" last.
        let tmp_png = tmp.with_extension("png");
        draw(&tmp_png).map_err(|e| Error::Data(format!("drawing {}: {e}", path.display())))?;
        std::fs::rename(&tmp_png, tmp).map_err(|e| Error::io(tmp, e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_text() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        let s = vec![
            ("loss".to_string(), (0..50).map(|i| (i as f64, 3.0 / (1.0 + i as f64))).collect()),
            (
                "val_loss".to_string(),
                (0..50).step_by(10).map(|i| (i as f64, 3.2 / (1.0 + i as f64))).collect(),
            ),
        ];
        line_chart(&p, "loss", "step", &s).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (900, 500));
        // Some dark pixels (axes and text) and some of the first series' colour.
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
        assert!(img.pixels().filter(|p| p.0[0] < 60 && p.0[1] < 60 && p.0[2] < 60).count() > 500);
        line_chart(&dir.path().join("empty.png"), "loss", "step", &[]).unwrap();
    }
}
