//! The `--sweep` plot: CPU per egress packet (and the floor) and delay against subscribers.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

/// One point of the sweep, read from a report.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    subscribers: f64,
    cpu_us: f64,
    floor_us: Option<f64>,
    delay_p50: f64,
    delay_p95: f64,
}

fn points(reports: &[serde_json::Value]) -> Vec<Point> {
    reports
        .iter()
        .filter_map(|r| {
            Some(Point {
                subscribers: r["subscribers"].as_f64()?,
                cpu_us: r["cpu_us_per_egress_packet"].as_f64()?,
                floor_us: r["floor_us_per_packet"].as_f64(),
                delay_p50: r["delay_ms"]["p50"].as_f64()?,
                delay_p95: r["delay_ms"]["p95"].as_f64()?,
            })
        })
        .collect()
}

/// Write an SVG with two charts side by side.
pub fn write_svg(path: &Path, reports: &[serde_json::Value]) -> anyhow::Result<()> {
    let pts = points(reports);
    anyhow::ensure!(!pts.is_empty(), "no complete report to plot");
    let max_x = pts.iter().map(|p| p.subscribers).fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).context("plot background")?;
    let (left, right) = root.split_horizontally(550);

    let max_cpu = pts.iter().map(|p| p.cpu_us).fold(1.0, f64::max) * 1.15;
    let mut cpu = chart(
        &left,
        "server CPU per egress packet (us)",
        "us / packet",
        max_x,
        max_cpu,
    )?;
    let line = |f: fn(&Point) -> Option<f64>| {
        pts.iter()
            .filter_map(move |p| f(p).map(|y| (p.subscribers, y)))
    };
    cpu.draw_series(LineSeries::new(line(|p| Some(p.cpu_us)), &RED))?
        .label("aethex")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED));
    cpu.draw_series(line(|p| Some(p.cpu_us)).map(|c| Circle::new(c, 3, RED.filled())))?;
    cpu.draw_series(LineSeries::new(line(|p| p.floor_us), &BLUE))?
        .label("floor (SRTP + send)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE));
    cpu.configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .context("cpu legend")?;

    let max_delay = pts.iter().map(|p| p.delay_p95).fold(1.0, f64::max) * 1.15;
    let mut delay = chart(&right, "forwarding delay (ms)", "ms", max_x, max_delay)?;
    delay
        .draw_series(LineSeries::new(line(|p| Some(p.delay_p50)), &GREEN))?
        .label("p50")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], GREEN));
    delay
        .draw_series(LineSeries::new(line(|p| Some(p.delay_p95)), &MAGENTA))?
        .label("p95")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], MAGENTA));
    delay
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .context("delay legend")?;
    root.present().context("writing the SVG")?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;
type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// One chart with the subscribers on x, from 0 to the maxima.
fn chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    y_desc: &str,
    max_x: f64,
    max_y: f64,
) -> anyhow::Result<Chart<'a, 'b>> {
    let mut c = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..max_x, 0.0..max_y)
        .context("chart")?;
    c.configure_mesh()
        .x_desc("subscribers")
        .y_desc(y_desc)
        .draw()
        .context("chart mesh")?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_reports_become_an_svg_with_every_series() {
        let reports: Vec<serde_json::Value> = [(1, 90.0, 3.0, 4.0, 6.0), (100, 11.0, 3.1, 14.0, 23.0)]
            .iter()
            .map(|&(n, cpu, floor, p50, p95)| {
                serde_json::json!({"subscribers": n, "cpu_us_per_egress_packet": cpu, "floor_us_per_packet": floor,
                    "delay_ms": {"p50": p50, "p95": p95}})
            })
            .collect();
        assert_eq!(points(&reports).len(), 2);
        let path = std::env::temp_dir().join(format!("aethex-plot-{}.svg", std::process::id()));
        write_svg(&path, &reports).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).ok();
        assert!(svg.starts_with("<svg"));
        for label in ["aethex", "floor (SRTP + send)", "p50", "p95", "subscribers"] {
            assert!(svg.contains(label), "plot lacks {label}");
        }
    }
}
