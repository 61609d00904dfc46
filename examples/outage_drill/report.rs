//! The final report: per-phase figures, the ramp, the JSON file, the SVG timeline and
//! the targets.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::metrics::{Record, Recorder, StepRecord, percentile, sorted_ms};
use crate::script::{PROVIDERS, Script};

#[derive(Debug, Clone)]
pub(crate) struct PhaseReport {
    pub(crate) name: String,
    pub(crate) start: Duration,
    pub(crate) end: Duration,
    pub(crate) has_healthy: bool,
    pub(crate) requests: u64,
    pub(crate) client_errors: u64,
    pub(crate) requests_to_open_providers: u64,
    /// Requests sent with `"stream": true`.
    pub(crate) streamed: u64,
    /// Answers in which the caller could see the provider's rejection text or key
    /// material: a target miss in any phase.
    pub(crate) provider_text_leaks: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) added_p99_ms: f64,
    pub(crate) share: [f64; 3],
    pub(crate) errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub(crate) phases: Vec<PhaseReport>,
    pub(crate) steps: Vec<StepRecord>,
    pub(crate) rollbacks: u64,
    pub(crate) completed: u64,
    /// The caller's view over time: (bucket middle, share per provider, errors).
    pub(crate) timeline: Vec<(f64, [f64; 3], u64)>,
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Report {
    pub(crate) fn build(script: &Script, recorder: &Recorder, bucket: Duration) -> Report {
        let records = recorder.records();
        let skipped = recorder.skipped();
        let open = recorder.open_hits();
        let mut phases = Vec::new();
        let mut start = Duration::ZERO;
        let mut baseline_p99 = None;
        for (i, phase) in script.phases.iter().enumerate() {
            let mine: Vec<&Record> = records.iter().filter(|r| r.phase == i).collect();
            let lat = sorted_ms(mine.iter().copied());
            let p99 = percentile(&lat, 0.99);
            let base = *baseline_p99.get_or_insert(p99);
            let n = mine.len() as u64;
            let mut share = [0.0; 3];
            for (p, s) in share.iter_mut().enumerate() {
                let served = mine.iter().filter(|r| r.served == Some(p)).count();
                *s = if n == 0 {
                    0.0
                } else {
                    served as f64 / n as f64
                };
            }
            let mut errors = BTreeMap::new();
            for r in &mine {
                if let Some(e) = &r.error {
                    *errors.entry(e.clone()).or_insert(0) += 1;
                }
            }
            let skip = skipped.get(i).copied().unwrap_or(0);
            if skip > 0 {
                errors.insert("not sent: generator at its in-flight limit".into(), skip);
            }
            phases.push(PhaseReport {
                name: phase.name.clone(),
                start,
                end: start + phase.duration,
                has_healthy: phase.has_healthy_provider(),
                requests: n + skip,
                client_errors: errors.values().sum(),
                requests_to_open_providers: open.get(i).map_or(0, |row| row.iter().sum()),
                streamed: mine.iter().filter(|r| r.stream).count() as u64,
                provider_text_leaks: mine.iter().filter(|r| r.leaked).count() as u64,
                p50_ms: percentile(&lat, 0.5),
                p99_ms: p99,
                added_p99_ms: p99 - base,
                share,
                errors,
            });
            start += phase.duration;
        }
        let (steps, rollbacks, completed) = recorder.ramp_steps();
        let width = bucket.as_secs_f64();
        let buckets = (start.as_secs_f64() / width).ceil().max(1.0) as usize;
        let mut counts = vec![([0u64; 3], 0u64, 0u64); buckets];
        for r in &records {
            let b = ((r.at.as_secs_f64() / width) as usize).min(buckets - 1);
            counts[b].2 += 1;
            match (r.served, &r.error) {
                (_, Some(_)) => counts[b].1 += 1,
                (Some(p), None) => counts[b].0[p] += 1,
                (None, None) => {}
            }
        }
        let timeline = counts
            .iter()
            .enumerate()
            .map(|(b, (served, errs, total))| {
                let t = *total.max(&1) as f64;
                let share = [
                    served[0] as f64 / t,
                    served[1] as f64 / t,
                    served[2] as f64 / t,
                ];
                ((b as f64 + 0.5) * width, share, *errs)
            })
            .collect();
        Report {
            phases,
            steps,
            rollbacks,
            completed,
            timeline,
        }
    }

    /// The target failures, if any.
    pub(crate) fn misses(&self) -> Vec<String> {
        let mut out = Vec::new();
        for p in &self.phases {
            if p.has_healthy && p.client_errors > 0 {
                out.push(format!(
                    "{}: {} caller errors while a provider was healthy",
                    p.name, p.client_errors
                ));
            }
            if p.requests_to_open_providers > 0 {
                out.push(format!(
                    "{}: {} requests reached a provider whose circuit was open",
                    p.name, p.requests_to_open_providers
                ));
            }
            if p.provider_text_leaks > 0 {
                out.push(format!(
                    "{}: {} answers showed the caller a provider's rejection text or key material",
                    p.name, p.provider_text_leaks
                ));
            }
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        let phases: Vec<Value> = self
            .phases
            .iter()
            .map(|p| {
                let share: serde_json::Map<String, Value> = PROVIDERS
                    .iter()
                    .zip(p.share)
                    .map(|(name, s)| ((*name).to_owned(), json!(round(s, 4))))
                    .collect();
                json!({
                    "name": p.name,
                    "requests": p.requests,
                    "client_errors": p.client_errors,
                    "requests_to_open_providers": p.requests_to_open_providers,
                    "streamed": p.streamed,
                    "provider_text_leaks": p.provider_text_leaks,
                    "p50_ms": round(p.p50_ms, 1),
                    "p99_ms": round(p.p99_ms, 1),
                    "added_p99_ms": round(p.added_p99_ms, 1),
                    "share": share,
                })
            })
            .collect();
        let steps: Vec<Value> = self
            .steps
            .iter()
            .map(|s| {
                let admitted =
                    (s.requests > 0).then(|| round(s.admitted as f64 / s.requests as f64, 4));
                json!({ "target": round(s.target, 4), "admitted": admitted })
            })
            .collect();
        json!({
            "phases": phases,
            "ramp": { "steps": steps, "rollbacks": self.rollbacks },
        })
    }

    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<28} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8} {:>8} {:>9}  {:>8} {:>9} {:>8}",
            "phase",
            "reqs",
            "stream",
            "errors",
            "open",
            "leaks",
            "p50 ms",
            "p99 ms",
            "+p99 ms",
            PROVIDERS[0],
            PROVIDERS[1],
            PROVIDERS[2]
        );
        for p in &self.phases {
            let _ = writeln!(
                out,
                "{:<28} {:>7} {:>7} {:>7} {:>6} {:>6} {:>8.1} {:>8.1} {:>+9.1}  {:>7.1}% {:>8.1}% {:>7.1}%",
                p.name,
                p.requests,
                p.streamed,
                p.client_errors,
                p.requests_to_open_providers,
                p.provider_text_leaks,
                p.p50_ms,
                p.p99_ms,
                p.added_p99_ms,
                p.share[0] * 100.0,
                p.share[1] * 100.0,
                p.share[2] * 100.0
            );
            for (e, n) in &p.errors {
                let _ = writeln!(out, "    {n} × {e}");
            }
        }
        let _ = writeln!(
            out,
            "\nrecovery ramp: {} steps, {} rollbacks, {} completed",
            self.steps.len(),
            self.rollbacks,
            self.completed
        );
        for s in &self.steps {
            let admitted = if s.requests == 0 {
                "no requests during the step".to_owned()
            } else {
                format!(
                    "admitted {:5.1}% of {} requests",
                    s.admitted as f64 * 100.0 / s.requests as f64,
                    s.requests
                )
            };
            let _ = writeln!(
                out,
                "  {:<10} target {:5.1}%  {admitted}",
                PROVIDERS[s.provider],
                s.target * 100.0
            );
        }
        out
    }

    pub(crate) fn svg(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        use plotters::prelude::*;
        let end = self.phases.last().map_or(1.0, |p| p.end.as_secs_f64());
        let root = SVGBackend::new(path, (1100, 640)).into_drawing_area();
        root.fill(&WHITE)?;
        let (top, bottom) = root.split_vertically(440);
        let colors = [
            RGBColor(31, 119, 180),
            RGBColor(214, 39, 40),
            RGBColor(44, 160, 44),
        ];

        let mut chart = ChartBuilder::on(&top)
            .caption(
                "tower-failover outage drill: share of requests per provider",
                ("sans-serif", 20),
            )
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..1.05f64)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc("share")
            .disable_x_mesh()
            .light_line_style(WHITE)
            .draw()?;
        for (i, name) in PROVIDERS.iter().enumerate() {
            let color = colors[i];
            chart
                .draw_series(LineSeries::new(
                    self.timeline.iter().map(|(t, share, _)| (*t, share[i])),
                    color.stroke_width(2),
                ))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        for p in &self.phases {
            let x = p.start.as_secs_f64();
            chart.draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, 1.05)],
                BLACK.mix(0.4),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                p.name.clone(),
                (x + end * 0.004, 1.02),
                ("sans-serif", 13),
            )))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;

        let max_err = self
            .timeline
            .iter()
            .map(|(_, _, e)| *e)
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let mut errs = ChartBuilder::on(&bottom)
            .caption("errors seen by callers", ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..end, 0f64..max_err * 1.1)?;
        errs.configure_mesh()
            .x_desc("seconds")
            .y_desc("errors per bucket")
            .disable_x_mesh()
            .light_line_style(WHITE)
            .draw()?;
        errs.draw_series(LineSeries::new(
            self.timeline.iter().map(|(t, _, e)| (*t, *e as f64)),
            BLACK.stroke_width(2),
        ))?;
        for p in &self.phases {
            let x = p.start.as_secs_f64();
            errs.draw_series(std::iter::once(PathElement::new(
                vec![(x, 0.0), (x, max_err * 1.1)],
                BLACK.mix(0.4),
            )))?;
        }
        root.present()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Record;

    fn record(
        at_ms: u64,
        phase: usize,
        latency_ms: u64,
        served: Option<usize>,
        error: bool,
    ) -> Record {
        Record {
            at: Duration::from_millis(at_ms),
            done: Duration::from_millis(at_ms + latency_ms),
            phase,
            latency: Duration::from_millis(latency_ms),
            served: if error { None } else { served },
            error: error.then(|| "all providers failed (3 attempts)".to_owned()),
            stream: at_ms.is_multiple_of(40),
            leaked: false,
        }
    }

    #[test]
    fn phases_shares_percentiles_and_targets() {
        let script = Script::load(None).unwrap();
        let recorder = Recorder::new(script.phases.len());
        for i in 0..100 {
            recorder.push(record(i * 10, 0, 50 + i % 10, Some(0), false));
        }
        for i in 0..100 {
            let served = if i < 75 { Some(2) } else { Some(1) };
            recorder.push(record(9_000 + i * 10, 1, 100 + i, served, i == 99));
        }
        let report = Report::build(&script, &recorder, Duration::from_secs(1));
        let base = &report.phases[0];
        assert_eq!((base.requests, base.client_errors), (100, 0));
        assert_eq!(base.share, [1.0, 0.0, 0.0]);
        assert_eq!(base.p50_ms, 54.0);
        assert_eq!(base.added_p99_ms, 0.0);
        let outage = &report.phases[1];
        assert_eq!(
            outage.share,
            [0.0, 0.24, 0.75],
            "the error was served by no one"
        );
        assert_eq!(outage.p99_ms, 198.0);
        assert_eq!(outage.added_p99_ms, 198.0 - 59.0);
        assert_eq!(
            report.misses().len(),
            1,
            "one caller error while providers were healthy"
        );

        let json = report.json();
        let phase = &json["phases"][1];
        assert_eq!(phase["name"], "primary outage");
        assert_eq!(phase["client_errors"], 1);
        assert_eq!(phase["share"]["tertiary"], 0.75);
        assert_eq!(phase["streamed"], 25);
        assert_eq!(phase["provider_text_leaks"], 0);
        assert_eq!(json["ramp"]["rollbacks"], 0);
        assert!(json["ramp"]["steps"].as_array().unwrap().is_empty());
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["phases", "ramp"]);
    }

    #[test]
    fn a_leak_is_a_miss_even_without_a_healthy_provider() {
        let script = Script::load(None).unwrap();
        let recorder = Recorder::new(script.phases.len());
        let mut r = record(0, 0, 50, Some(0), false);
        r.leaked = true;
        recorder.push(r);
        let report = Report::build(&script, &recorder, Duration::from_secs(1));
        assert_eq!(report.phases[0].provider_text_leaks, 1);
        assert_eq!(report.phases[0].client_errors, 0);
        let misses = report.misses();
        assert_eq!(misses.len(), 1);
        assert!(
            misses[0].contains("rejection text or key material"),
            "{misses:?}"
        );
        assert_eq!(report.json()["phases"][0]["provider_text_leaks"], 1);
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&[], 0.99), 0.0);
        assert_eq!(percentile(&[7.0], 0.5), 7.0);
    }
}
