//! Bar charts drawn on the server as SVG: no chart library, no script, and
//! each bar has a native tooltip (`<title>`). Horizontal positions are
//! percentages and vertical ones pixels, so a chart fills any width while
//! its text keeps its size (a scaled `viewBox` would shrink labels to
//! nothing on a phone).

use maud::{html, Markup};

/// One bar: a label (the day) and a stack of values from the bottom up.
pub struct Bar {
    pub label: String,
    pub values: Vec<f64>,
    /// The tooltip.
    pub title: String,
}

const HEIGHT: f64 = 190.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 22.0;
/// Fill of each stacked series (the `.c0`…`.c4` legend colours).
const COLORS: [&str; 5] = ["#4f46e5", "#a5b4fc", "#f59e0b", "#10b981", "#dc2626"];

/// A stacked bar chart; `fmt` formats axis values.
pub fn bars(aria_label: &str, bars: &[Bar], fmt: &dyn Fn(f64) -> String) -> Markup {
    let max = bars.iter().map(|b| b.values.iter().sum::<f64>()).fold(0.0, f64::max);
    let top = nice_ceiling(max);
    let plot_h = HEIGHT - BOTTOM - TOP;
    let y = |v: f64| TOP + plot_h - if top > 0.0 { v / top * plot_h } else { 0.0 };
    let slot = 100.0 / bars.len().max(1) as f64;
    let bar_w = slot * 0.7;
    // Label every day when few, else about six labels.
    let every = bars.len().div_ceil(6).max(1);
    html! {
        svg.chart width="100%" height=(HEIGHT) role="img" aria-label=(aria_label) {
            @for i in 0..=4 {
                @let v = top * i as f64 / 4.0;
                line x1="0" x2="100%" y1=(px(y(v))) y2=(px(y(v))) stroke="#e2e8f0" stroke-width="1" {}
            }
            @for (i, b) in bars.iter().enumerate() {
                @let x = slot * i as f64 + (slot - bar_w) / 2.0;
                g {
                    title { (b.title) }
                    @for (k, lo, hi) in stack(&b.values) {
                        rect x=(pct(x)) y=(px(y(hi))) width=(pct(bar_w))
                            height=(px((y(lo) - y(hi)).max(0.5))) fill=(COLORS[k % COLORS.len()]) {}
                    }
                    // A transparent full-height target so the tooltip works on empty days too.
                    rect x=(pct(x)) y=(TOP) width=(pct(bar_w)) height=(plot_h) fill="transparent" {}
                }
                @if i % every == 0 {
                    text x=(pct(x + bar_w / 2.0)) y=(HEIGHT - 6.0) text-anchor="middle" { (b.label) }
                }
            }
            // Axis values last, over the bars, with a halo to stay legible.
            @for i in 1..=4 {
                @let v = top * i as f64 / 4.0;
                text.axis x="2" y=(px(y(v) - 3.0)) paint-order="stroke" stroke="#fff" stroke-width="3" { (fmt(v)) }
            }
        }
    }
}

/// The non-empty segments of a stack: (series, bottom, top).
fn stack(values: &[f64]) -> Vec<(usize, f64, f64)> {
    let mut base = 0.0;
    let mut out = Vec::new();
    for (k, v) in values.iter().enumerate() {
        if *v > 0.0 {
            out.push((k, base, base + v));
            base += v;
        }
    }
    out
}

fn pct(v: f64) -> String {
    format!("{v:.2}%")
}

fn px(v: f64) -> String {
    format!("{v:.1}")
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (0 stays 0).
pub fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 0.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * mag).find(|c| *c >= v * 0.999_999).unwrap_or(10.0 * mag)
}

/// A horizontal progress bar (share between 0 and 1).
pub fn meter(share: f64) -> Markup {
    let w = (share.clamp(0.0, 1.0) * 1000.0).round() / 10.0;
    html! {
        div.bar {
            svg aria-hidden="true" {
                rect x="0" y="0" width=(pct(w)) height="8" fill="#4f46e5" {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_scales() {
        assert_eq!(nice_ceiling(0.0), 0.0);
        assert_eq!(nice_ceiling(0.83), 1.0);
        assert_eq!(nice_ceiling(1.2), 2.0);
        assert_eq!(nice_ceiling(2.2), 2.5);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert!((nice_ceiling(0.00042) - 0.0005).abs() < 1e-12);
    }

    #[test]
    fn renders_one_group_per_bar() {
        let b: Vec<Bar> = (0..3)
            .map(|i| Bar { label: format!("d{i}"), values: vec![i as f64, 1.0], title: format!("day {i}") })
            .collect();
        let svg = bars("cost", &b, &|v| format!("{v}")).into_string();
        assert_eq!(svg.matches("<g>").count(), 3);
        assert!(svg.contains("<title>day 2</title>"));
        // Day 2 stacks 2 + 1 = 3 on a scale to 5: its top is at 3/5 of the plot.
        assert!(svg.contains(&format!("y=\"{}\"", px(TOP + (HEIGHT - BOTTOM - TOP) * 0.4))), "{svg}");
        assert!(!svg.contains("style="), "the CSP forbids inline styles");
    }

    #[test]
    fn stacks_skip_empty_series() {
        assert_eq!(stack(&[1.0, 0.0, 2.0]), vec![(0, 0.0, 1.0), (2, 1.0, 3.0)]);
    }
}
