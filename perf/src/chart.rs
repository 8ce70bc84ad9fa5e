//! `chart`: draws latency against throughput as an SVG, one line per
//! series (server), one point per run, from a TSV the compare scripts
//! write: `series \t x \t y \t label` (label: the point's name, e.g. its
//! client count). The y axis is logarithmic: latencies of etcd and ferrocd
//! at 1 and 256 clients span three decades.

use std::path::PathBuf;

use plotters::prelude::*;

use crate::args::Flags;

pub const USAGE: &str = "\
usage: ferrocd-perf chart --input TSV --out SVG [--title T] [--x-label L] [--y-label L]
  TSV lines: series, x, y, point label (tab-separated); y must be > 0";

const SERIES_MAX: usize = 8;
const POINTS_MAX: usize = 10_000;
const WIDTH_PX: u32 = 900;
const HEIGHT_PX: u32 = 560;
/// Series colours: etcd and ferrocd first, then others.
const COLOURS: [RGBColor; SERIES_MAX] = [
    RGBColor(0x41, 0x69, 0xe1),
    RGBColor(0xd9, 0x4a, 0x1e),
    RGBColor(0x2e, 0x8b, 0x57),
    RGBColor(0x8a, 0x2b, 0xe2),
    RGBColor(0x55, 0x55, 0x55),
    RGBColor(0xb8, 0x86, 0x0b),
    RGBColor(0x00, 0x8b, 0x8b),
    RGBColor(0xc7, 0x15, 0x85),
];

struct Point {
    x: f64,
    y: f64,
    label: String,
}

/// Series in order of first appearance, each with its points sorted by x.
fn parse(tsv: &str) -> Result<Vec<(String, Vec<Point>)>, String> {
    let mut series: Vec<(String, Vec<Point>)> = Vec::new();
    let mut points = 0;
    for (n, line) in tsv
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split('\t').collect();
        let bad = || format!("line {}: want series, x, y, label: {line:?}", n + 1);
        if f.len() < 3 {
            return Err(bad());
        }
        let (Ok(x), Ok(y)) = (f[1].parse::<f64>(), f[2].parse::<f64>()) else {
            return Err(bad());
        };
        if !(x.is_finite() && y.is_finite() && x >= 0.0 && y > 0.0) {
            return Err(bad());
        }
        points += 1;
        if points > POINTS_MAX {
            return Err(format!("more than {POINTS_MAX} points"));
        }
        let p = Point {
            x,
            y,
            label: f.get(3).unwrap_or(&"").to_string(),
        };
        match series.iter().position(|(s, _)| s == f[0]) {
            Some(i) => series[i].1.push(p),
            None if series.len() < SERIES_MAX => series.push((f[0].to_string(), vec![p])),
            None => return Err(format!("more than {SERIES_MAX} series")),
        }
    }
    if series.is_empty() {
        return Err("no points".into());
    }
    for (_, v) in &mut series {
        v.sort_by(|a, b| a.x.total_cmp(&b.x));
    }
    Ok(series)
}

pub fn main(args: &[String]) -> Result<(), String> {
    let f = Flags::parse(
        args,
        &["--input", "--out", "--title", "--x-label", "--y-label"],
        &[],
    )?;
    let input: PathBuf = f.opt("--input")?.ok_or("--input is required")?;
    let out: PathBuf = f.opt("--out")?.ok_or("--out is required")?;
    let tsv = std::fs::read_to_string(&input).map_err(|e| format!("{}: {e}", input.display()))?;
    let series = parse(&tsv)?;
    draw(
        &series,
        &out,
        f.raw("--title").unwrap_or("latency against throughput"),
        f.raw("--x-label").unwrap_or("throughput (req/s)"),
        f.raw("--y-label").unwrap_or("p99 latency (ms)"),
    )
    .map_err(|e| format!("{}: {e}", out.display()))
}

fn draw(
    series: &[(String, Vec<Point>)],
    out: &PathBuf,
    title: &str,
    x_label: &str,
    y_label: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let all = || series.iter().flat_map(|(_, v)| v.iter());
    let x_max = all().map(|p| p.x).fold(0.0, f64::max) * 1.1 + 1.0;
    let y_min = all().map(|p| p.y).fold(f64::INFINITY, f64::min) / 2.0;
    let y_max = all().map(|p| p.y).fold(0.0, f64::max) * 2.0;
    let root = SVGBackend::new(out, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v}"))
        .draw()?;
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = COLOURS[i % SERIES_MAX];
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.x, p.y)),
                colour.stroke_width(2),
            ))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
        chart.draw_series(points.iter().map(|p| {
            EmptyElement::at((p.x, p.y))
                + Circle::new((0, 0), 4, colour.filled())
                + Text::new(p.label.clone(), (6, -14), ("sans-serif", 12))
        }))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_in_order_and_refuses_bad_lines() {
        let s = parse("etcd\t200\t3.5\t16\nferrocd\t100\t1\t1\netcd\t100\t1.2\t1\n").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].0, "etcd");
        assert_eq!(s[0].1[0].x, 100.0);
        assert_eq!(s[0].1[1].label, "16");
        assert!(parse("").is_err());
        assert!(parse("etcd\tx\t1\n").is_err());
        assert!(parse("etcd\t1\t0\n").is_err());
        assert!(parse("etcd\t1\n").is_err());
    }

    #[test]
    fn draws_an_svg() {
        let dir = std::env::temp_dir().join(format!("ferrocd-chart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("c.svg");
        let s = parse("etcd\t2000\t1.1\t1\netcd\t17000\t40\t256\nferrocd\t2400\t0.6\t1\n").unwrap();
        draw(&s, &out, "t", "x", "y").unwrap();
        let svg = std::fs::read_to_string(&out).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("ferrocd") && svg.contains("256"));
    }
}
