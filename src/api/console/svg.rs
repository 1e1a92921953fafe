//! Pictures the console draws on the server as SVG: sparklines, a time-series chart
//! and the units' dependency graph. Everything here is geometry (numbers and path
//! data); the templates put names and labels in through `<%= %>`, so no text a user
//! wrote is ever inserted unescaped. Pure: unit-tested without a server.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::control::protocol::UnitInfo;

/// A sparkline: `points` for an SVG `polyline` in a `width` × `height` box, the
/// largest value, and the sum.
#[derive(Debug, Clone, PartialEq)]
pub struct Spark {
    /// `x,y x,y …`.
    pub points: String,
    /// Largest value.
    pub max: f64,
    /// Sum of the values.
    pub total: f64,
}

/// Width of a sparkline's box.
pub const SPARK_W: f64 = 120.0;
/// Height of a sparkline's box.
pub const SPARK_H: f64 = 24.0;

/// `values` (oldest first, evenly spaced) as a sparkline; a flat line at the bottom
/// when they are all zero.
pub fn sparkline(values: &[f64]) -> Spark {
    let max = values.iter().copied().fold(0.0, f64::max);
    let total = values.iter().sum();
    let n = values.len().max(2) - 1;
    let points = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let x = SPARK_W * i as f64 / n as f64;
            let y = if max > 0.0 {
                SPARK_H - 1.0 - (SPARK_H - 2.0) * v / max
            } else {
                SPARK_H - 1.0
            };
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    Spark { points, max, total }
}

/// Bucket widths a chart picks from (seconds): round numbers a reader recognises.
const WIDTHS: &[i64] = &[
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172800, 604800, 2592000, 7776000, 31536000,
];

/// Pixels per bucket a chart aims at.
pub const PX_PER_BUCKET: f64 = 4.0;

/// Most points one series of a chart holds, whatever its width.
pub const MAX_POINTS: i64 = 1000;

/// The bucket width (seconds) for a chart `width_px` wide over `from..to`: about one
/// bucket per [`PX_PER_BUCKET`] pixels, rounded up to a round width, and never more
/// than [`MAX_POINTS`] buckets.
pub fn bucket_secs(from: DateTime<Utc>, to: DateTime<Utc>, width_px: u32) -> i64 {
    let span = (to - from).num_seconds().max(1);
    let buckets = ((width_px as f64 / PX_PER_BUCKET) as i64).clamp(1, MAX_POINTS);
    let ideal = (span + buckets - 1) / buckets;
    WIDTHS
        .iter()
        .copied()
        .find(|w| *w >= ideal)
        .unwrap_or_else(|| ideal.max(1))
}

/// `t` moved to a bucket boundary (buckets of `bucket_secs` from 2000-01-01T00:00:00Z,
/// as the aggregation cuts them): the one before it, or with `up` the one after it
/// (`t` itself when it is one).
pub fn boundary(t: DateTime<Utc>, bucket_secs: i64, up: bool) -> DateTime<Utc> {
    let origin = DateTime::from_timestamp(946_684_800, 0).expect("2000-01-01");
    let ms = (t - origin).num_milliseconds();
    let w = bucket_secs.max(1) * 1000;
    let mut n = ms.div_euclid(w);
    if up && ms.rem_euclid(w) != 0 {
        n += 1;
    }
    origin + chrono::Duration::milliseconds(n * w)
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// What it shows (a target).
    pub name: String,
    /// SVG path data.
    pub path: String,
    /// Its points: (x, y, label for a tooltip).
    pub dots: Vec<(f64, f64, String)>,
    /// Its colour, 0..8 (a class in the stylesheet).
    pub colour: usize,
}

/// A chart: lines over a time axis, with tick labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Box width.
    pub width: f64,
    /// Box height.
    pub height: f64,
    /// Left edge of the plot.
    pub left: f64,
    /// Right edge of the plot.
    pub right: f64,
    /// Top of the plot.
    pub top: f64,
    /// Bottom of the plot.
    pub bottom: f64,
    /// The lines.
    pub lines: Vec<Line>,
    /// Ticks on the time axis: (x, label, text-anchor).
    pub x_ticks: Vec<(f64, String, &'static str)>,
    /// Ticks on the value axis: (y, label).
    pub y_ticks: Vec<(f64, String)>,
}

/// Height of a chart's box.
pub const CHART_H: f64 = 260.0;

/// A value as a short label.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(0.01..1e6).contains(&a) {
        format!("{v:.3e}")
    } else if v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// A chart `width` wide of `series` (name → (bucket start, value), any order) over
/// `from..to` with buckets `bucket_secs` wide: a line breaks where it has no value
/// for much longer than usual.
pub fn chart(
    series: &BTreeMap<String, Vec<(DateTime<Utc>, f64)>>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    bucket_secs: i64,
    width: u32,
) -> Chart {
    let width = width as f64;
    let (left, right, top, bottom) = (56.0, width - 12.0, 10.0, CHART_H - 28.0);
    let t0 = from.timestamp() as f64;
    let span = ((to - from).num_milliseconds() as f64 / 1000.0).max(1.0);
    let values = series.values().flatten().map(|(_, v)| *v);
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if (hi - lo).abs() < f64::EPSILON {
        (lo, hi) = (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    let x = |t: DateTime<Utc>| {
        left + (right - left) * ((t.timestamp_millis() as f64 / 1000.0 - t0) / span)
    };
    let y = |v: f64| bottom - (bottom - top) * (v - lo) / (hi - lo);
    let lines = series
        .iter()
        .enumerate()
        .map(|(i, (name, points))| {
            let mut points = points.clone();
            points.sort_by_key(|(t, _)| *t);
            // Points are joined unless far apart for this line: more than three times
            // its usual spacing (or the bucket, if wider). Sparse records make sparse
            // buckets, and a line of dots only would hide the series.
            let mut gaps: Vec<i64> = points
                .windows(2)
                .map(|w| (w[1].0 - w[0].0).num_seconds())
                .collect();
            gaps.sort_unstable();
            let usual = gaps
                .get(gaps.len() / 2)
                .copied()
                .unwrap_or(0)
                .max(bucket_secs);
            let mut path = String::new();
            let mut prev: Option<DateTime<Utc>> = None;
            let mut dots = vec![];
            for (t, v) in &points {
                let (px, py) = (x(*t), y(*v));
                let joined = prev.is_some_and(|p| (*t - p).num_seconds() <= 3 * usual);
                path.push_str(&format!(
                    "{}{px:.1} {py:.1} ",
                    if joined { "L" } else { "M" }
                ));
                dots.push((
                    px,
                    py,
                    format!("{name} {} {}", t.format("%Y-%m-%d %H:%M:%S"), number(*v)),
                ));
                prev = Some(*t);
            }
            Line {
                name: name.clone(),
                path: path.trim_end().to_string(),
                dots,
                colour: i % 8,
            }
        })
        .collect();
    let x_ticks = (0..=4)
        .map(|i| {
            let t = from + chrono::Duration::milliseconds((span * 1000.0 * i as f64 / 4.0) as i64);
            let label = if span <= 2.0 * 86400.0 {
                t.format("%m-%d %H:%M").to_string()
            } else {
                t.format("%Y-%m-%d").to_string()
            };
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            (x(t), label, anchor)
        })
        .collect();
    let y_ticks = (0..=4)
        .map(|i| {
            let v = lo + (hi - lo) * i as f64 / 4.0;
            (y(v), number(v))
        })
        .collect();
    Chart {
        width,
        height: CHART_H,
        left,
        right,
        top,
        bottom,
        lines,
        x_ticks,
        y_ticks,
    }
}

/// A unit in the dependency graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Instance name.
    pub name: String,
    /// Its state (`ready`, `failed` …).
    pub state: String,
    /// Top-left corner.
    pub x: f64,
    /// Top-left corner.
    pub y: f64,
}

/// An edge of the graph: SVG path data, and whether it is a requirement (solid) or
/// a want (dashed).
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// Path data.
    pub path: String,
    /// A `requires` edge (otherwise `wants`).
    pub required: bool,
}

/// The units laid out left to right by start order.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// Box width.
    pub width: f64,
    /// Box height.
    pub height: f64,
    /// The units.
    pub nodes: Vec<Node>,
    /// What requires or wants what (drawn from the dependency to the dependent).
    pub edges: Vec<Edge>,
}

/// Width of a unit's box.
pub const NODE_W: f64 = 168.0;
/// Height of a unit's box.
pub const NODE_H: f64 = 54.0;
const COL_GAP: f64 = 56.0;
const ROW_GAP: f64 = 14.0;

/// The graph of `units`: a unit stands one column right of everything it requires,
/// wants or is ordered after (a cycle, which the supervisor refuses anyway, cannot
/// push it right for ever); within a column, by name.
pub fn graph(units: &[UnitInfo]) -> Graph {
    let known = |n: &String| units.iter().any(|u| &u.name == n);
    let deps = |u: &UnitInfo| -> Vec<String> {
        let mut d: Vec<String> = u
            .requires
            .iter()
            .chain(&u.wants)
            .chain(&u.after)
            .filter(|n| known(n) && **n != u.name)
            .cloned()
            .collect();
        d.sort();
        d.dedup();
        d
    };
    let mut level: BTreeMap<String, usize> = units.iter().map(|u| (u.name.clone(), 0)).collect();
    for _ in 0..units.len() {
        let mut changed = false;
        for u in units {
            let l = deps(u).iter().map(|d| level[d] + 1).max().unwrap_or(0);
            if l > level[&u.name] && l < units.len() {
                level.insert(u.name.clone(), l);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let columns = level.values().copied().max().map_or(0, |m| m + 1);
    let mut rows = vec![0usize; columns];
    let mut place: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    let mut nodes = vec![];
    for (name, l) in &level {
        let (x, y) = (
            8.0 + *l as f64 * (NODE_W + COL_GAP),
            8.0 + rows[*l] as f64 * (NODE_H + ROW_GAP),
        );
        rows[*l] += 1;
        place.insert(name.clone(), (x, y));
        let state = units
            .iter()
            .find(|u| &u.name == name)
            .map(|u| u.state.as_str().to_string())
            .unwrap_or_default();
        nodes.push(Node {
            name: name.clone(),
            state,
            x,
            y,
        });
    }
    let mut edges = vec![];
    for u in units {
        let (tx, ty) = place[&u.name];
        for (targets, required) in [(&u.requires, true), (&u.wants, false)] {
            for d in targets.iter().filter(|n| known(n)) {
                let (sx, sy) = place[d];
                let (x1, y1) = (sx + NODE_W, sy + NODE_H / 2.0);
                let (x2, y2) = (tx, ty + NODE_H / 2.0);
                let mid = (x1 + x2) / 2.0;
                edges.push(Edge {
                    path: format!(
                        "M{x1:.1} {y1:.1} C{mid:.1} {y1:.1} {mid:.1} {y2:.1} {x2:.1} {y2:.1}"
                    ),
                    required,
                });
            }
        }
    }
    let tallest = rows.iter().copied().max().unwrap_or(0);
    Graph {
        width: 16.0 + columns as f64 * (NODE_W + COL_GAP) - COL_GAP,
        height: 16.0 + tallest as f64 * (NODE_H + ROW_GAP) - ROW_GAP,
        nodes,
        edges,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::protocol::State;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_sparkline_spans_its_box_and_scales_to_its_largest_value() {
        let s = sparkline(&[0.0, 5.0, 10.0]);
        assert_eq!(s.points, "0.0,23.0 60.0,12.0 120.0,1.0");
        assert_eq!((s.max, s.total), (10.0, 15.0));
        assert_eq!(sparkline(&[0.0, 0.0]).points, "0.0,23.0 120.0,23.0");
    }

    #[test]
    fn the_bucket_follows_the_width_and_never_makes_more_points_than_the_cap() {
        let from = t("2026-12-06T00:00:00Z");
        let day = t("2026-12-07T00:00:00Z");
        // 960 px: 240 buckets wanted; a day / 240 = 360 s, rounded up to 600 s.
        assert_eq!(bucket_secs(from, day, 960), 600);
        // Twice as wide, twice as fine (180 s → 300 s).
        assert_eq!(bucket_secs(from, day, 1920), 300);
        // However wide, at most MAX_POINTS buckets.
        let b = bucket_secs(from, day, 1_000_000);
        assert!(86400 / b <= MAX_POINTS, "{b}");
        assert_eq!(
            bucket_secs(from, from, 960),
            1,
            "an empty span still has a width"
        );
        // Windows widen to whole buckets, cut from 2000-01-01 as the aggregation cuts.
        let t = DateTime::parse_from_rfc3339("2026-12-06T10:07:30Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            boundary(t, 600, false).to_rfc3339(),
            "2026-12-06T10:00:00+00:00"
        );
        assert_eq!(
            boundary(t, 600, true).to_rfc3339(),
            "2026-12-06T10:10:00+00:00"
        );
        assert_eq!(boundary(from, 600, true), from, "a boundary stays");
        assert_eq!(
            boundary(t, 7 * 86400, false).to_rfc3339(),
            "2026-12-05T00:00:00+00:00"
        );
    }

    #[test]
    fn a_chart_line_breaks_where_it_has_no_value_for_much_longer_than_usual() {
        let from = t("2026-12-06T00:00:00Z");
        let to = t("2026-12-06T00:10:00Z");
        let p = |m: u32, v: f64| (t(&format!("2026-12-06T00:0{m}:00Z")), v);
        let series = BTreeMap::from([(
            "a".to_string(),
            vec![p(0, 1.0), p(1, 2.0), p(5, 3.0), p(6, 2.0)],
        )]);
        let c = chart(&series, from, to, 60, 600);
        let path = &c.lines[0].path;
        assert_eq!(path.matches('M').count(), 2, "{path}");
        assert_eq!(path.matches('L').count(), 2, "{path}");
        assert_eq!(c.lines[0].dots.len(), 4);
        // Regularly sparse values (every third bucket) make one line, not dots.
        let sparse = BTreeMap::from([(
            "b".to_string(),
            vec![p(0, 1.0), p(3, 2.0), p(6, 3.0), p(9, 2.0)],
        )]);
        let s = &chart(&sparse, from, to, 60, 600).lines[0].path;
        assert_eq!(
            (s.matches('M').count(), s.matches('L').count()),
            (1, 3),
            "{s}"
        );
        assert!(
            c.lines[0].dots[2].2.ends_with("00:05:00 3"),
            "{:?}",
            c.lines[0].dots
        );
        // The extremes sit inside the plot.
        let ys: Vec<f64> = c.lines[0].dots.iter().map(|d| d.1).collect();
        assert!(ys.iter().all(|y| *y >= c.top && *y <= c.bottom), "{ys:?}");
    }

    fn unit(name: &str, requires: &[&str], wants: &[&str]) -> UnitInfo {
        UnitInfo {
            name: name.into(),
            state: State::Ready,
            kind: "simple".into(),
            channel: name.into(),
            file: String::new(),
            description: String::new(),
            requires: requires.iter().map(|r| r.to_string()).collect(),
            wants: wants.iter().map(|r| r.to_string()).collect(),
            after: requires.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[test]
    fn units_stand_right_of_what_they_depend_on() {
        let g = graph(&[
            unit("api", &["migrate"], &["seaweedfs"]),
            unit("migrate", &["postgresql"], &[]),
            unit("postgresql", &[], &[]),
            unit("seaweedfs", &[], &[]),
        ]);
        let x = |n: &str| g.nodes.iter().find(|x| x.name == n).unwrap().x;
        assert!(x("postgresql") < x("migrate") && x("migrate") < x("api"));
        assert_eq!(x("seaweedfs"), x("postgresql"));
        assert_eq!(g.edges.len(), 3);
        assert_eq!(g.edges.iter().filter(|e| !e.required).count(), 1);
        // A cycle does not hang the layout.
        let c = graph(&[unit("a", &["b"], &[]), unit("b", &["a"], &[])]);
        assert_eq!(c.nodes.len(), 2);
    }
}
