//! The CronJob controller: a five-field cron schedule (with the `@hourly`-style macros) in
//! UTC, Jobs named `<cronjob>-<scheduled minutes since the epoch>`, concurrency policies,
//! history limits, and lastScheduleTime/lastSuccessfulTime/active in the status.

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use serde_json::{Value, json};

use super::events::Ev;
use super::util::{condition, controller_ref, int_at};
use super::write::KCM;
use super::{Key, Kind, Obj, Sim, SimError};

/// A parsed cron schedule: the allowed values of each field as bit sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// Day-of-month and day-of-week were both restricted: a day matches if either does.
    either_day: bool,
}

/// Why a schedule does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unparseable schedule {schedule:?}: {why}")]
pub struct ScheduleError {
    /// The schedule as written.
    pub schedule: String,
    /// What is wrong.
    pub why: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{v} is out of range {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    let mut star = false;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s.parse().map_err(|_| format!("bad step {s:?}"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, Some(step))
            }
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            star = step.is_none() && text == range;
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if step.is_some() { max } else { v })
        };
        if lo > hi {
            return Err(format!("range {lo}-{hi} is backwards"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step.unwrap_or(1);
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a standard five-field schedule or a macro (`@yearly`, `@monthly`, `@weekly`,
    /// `@daily`, `@midnight`, `@hourly`). A `CRON_TZ=`/`TZ=` prefix must name UTC.
    pub fn parse(schedule: &str) -> Result<Schedule, ScheduleError> {
        let err = |why: String| ScheduleError {
            schedule: schedule.to_string(),
            why,
        };
        let mut text = schedule.trim();
        if let Some(rest) = text
            .strip_prefix("CRON_TZ=")
            .or_else(|| text.strip_prefix("TZ="))
        {
            let (tz, rest) = rest
                .split_once(' ')
                .ok_or_else(|| err("nothing after the time zone".into()))?;
            if !matches!(tz, "UTC" | "Etc/UTC") {
                return Err(err(format!("time zone {tz:?} is not supported (only UTC)")));
            }
            text = rest.trim();
        }
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        if parts.len() != 5 {
            return Err(err(format!("expected 5 fields, found {}", parts.len())));
        }
        let (minutes, _) =
            field(parts[0], 0, 59, &[], 0).map_err(|e| err(format!("minute: {e}")))?;
        let (hours, _) = field(parts[1], 0, 23, &[], 0).map_err(|e| err(format!("hour: {e}")))?;
        let (days, dom_star) =
            field(parts[2], 1, 31, &[], 0).map_err(|e| err(format!("day of month: {e}")))?;
        let (months, _) =
            field(parts[3], 1, 12, &MONTHS, 1).map_err(|e| err(format!("month: {e}")))?;
        let (mut weekdays, dow_star) =
            field(parts[4], 0, 7, &DAYS, 0).map_err(|e| err(format!("day of week: {e}")))?;
        // 7 is Sunday too.
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            days,
            months,
            weekdays,
            either_day: !dom_star && !dow_star,
        })
    }

    fn day_matches(&self, t: &DateTime<Utc>) -> bool {
        let dom = self.days & (1 << t.day()) != 0;
        let dow = self.weekdays & (1 << t.weekday().num_days_from_sunday()) != 0;
        if self.either_day {
            dom || dow
        } else {
            dom && dow
        }
    }

    /// The first scheduled time strictly after `after` (within about five years).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = after.with_second(0)?.with_nanosecond(0)? + chrono::Duration::minutes(1);
        let mut t = start;
        let limit = after + chrono::Duration::days(366 * 5);
        while t <= limit {
            if self.months & (1 << t.month()) == 0 {
                // First minute of the next month.
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = Utc.with_ymd_and_hms(y, m, 1, 0, 0, 0).single()?;
                continue;
            }
            if !self.day_matches(&t) {
                t = (t + chrono::Duration::days(1))
                    .with_hour(0)?
                    .with_minute(0)?;
                continue;
            }
            if self.hours & (1 << t.hour()) == 0 {
                t = (t + chrono::Duration::hours(1)).with_minute(0)?;
                continue;
            }
            if self.minutes & (1 << t.minute()) == 0 {
                t += chrono::Duration::minutes(1);
                continue;
            }
            return Some(t);
        }
        None
    }

    /// The latest scheduled time in `(after, now]`, if any.
    pub fn latest_between(
        &self,
        after: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        // A long-missed schedule only needs its most recent time: look back at most a day.
        let mut t = after.max(now - chrono::Duration::days(1));
        let mut last = None;
        while let Some(n) = self.next_after(t) {
            if n > now {
                break;
            }
            last = Some(n);
            t = n;
        }
        last
    }
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn finished(job: &Value) -> Option<&'static str> {
    for ty in ["Complete", "Failed"] {
        if condition(job.pointer("/status/conditions"), ty)
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            == Some("True")
        {
            return Some(if ty == "Complete" {
                "Complete"
            } else {
                "Failed"
            });
        }
    }
    None
}

impl Sim {
    pub(crate) fn reconcile_cronjob(&mut self, key: &Key) -> Result<(), SimError> {
        let Some(cj) = self.get(Kind::CronJob, &key.ns, &key.name)? else {
            return Ok(());
        };
        if cj.deleting() {
            return Ok(());
        }
        let schedule_text =
            cj.v.pointer("/spec/schedule")
                .and_then(Value::as_str)
                .unwrap_or("");
        let schedule = match Schedule::parse(schedule_text) {
            Ok(s) => s,
            Err(e) => {
                self.cj_event(&cj, true, "UnparseableSchedule", e.to_string());
                return Ok(());
            }
        };
        let old = cj.v.get("status").cloned().unwrap_or_else(|| json!({}));
        let was_active: Vec<String> = old
            .get("active")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("name").and_then(Value::as_str).map(String::from))
            .collect();
        let mut jobs = self.children_of(cj.uid(), cj.ns(), Kind::Job);
        jobs.sort_by(|a, b| {
            super::util::meta_str(&a.v, "creationTimestamp")
                .cmp(super::util::meta_str(&b.v, "creationTimestamp"))
                .then(a.name().cmp(b.name()))
        });
        let mut last_success = old
            .get("lastSuccessfulTime")
            .and_then(Value::as_str)
            .and_then(parse_time);
        let mut active = Vec::new();
        let mut succeeded = Vec::new();
        let mut failed = Vec::new();
        for j in &jobs {
            match finished(&j.v) {
                None => active.push(j),
                Some(how) => {
                    if was_active.iter().any(|n| n == j.name()) {
                        let name = j.name().to_string();
                        self.cj_event(
                            &cj,
                            false,
                            "SawCompletedJob",
                            format!("Saw completed job: {name}, condition: {how}"),
                        );
                    }
                    if how == "Complete" {
                        if let Some(t) =
                            j.v.pointer("/status/completionTime")
                                .and_then(Value::as_str)
                                .and_then(parse_time)
                        {
                            last_success = Some(last_success.map_or(t, |l| l.max(t)));
                        }
                        succeeded.push(j);
                    } else {
                        failed.push(j);
                    }
                }
            }
        }
        // History limits: the oldest finished Jobs beyond them go.
        let keep_ok = int_at(&cj.v, "/spec/successfulJobsHistoryLimit")
            .unwrap_or(3)
            .max(0) as usize;
        let keep_failed = int_at(&cj.v, "/spec/failedJobsHistoryLimit")
            .unwrap_or(1)
            .max(0) as usize;
        let mut doomed: Vec<String> = Vec::new();
        if succeeded.len() > keep_ok {
            doomed.extend(
                succeeded[..succeeded.len() - keep_ok]
                    .iter()
                    .map(|j| j.name().to_string()),
            );
        }
        if failed.len() > keep_failed {
            doomed.extend(
                failed[..failed.len() - keep_failed]
                    .iter()
                    .map(|j| j.name().to_string()),
            );
        }
        let mut active_names: Vec<(String, String, String)> = active
            .iter()
            .map(|j| {
                (
                    j.name().to_string(),
                    j.uid().to_string(),
                    super::util::meta_str(&j.v, "resourceVersion").to_string(),
                )
            })
            .collect();
        for name in doomed {
            self.delete(Kind::Job, cj.ns(), &name, KCM)?;
            self.cj_event(
                &cj,
                false,
                "SuccessfulDelete",
                format!("Deleted job {name}"),
            );
        }

        let now = Utc::now();
        let created = parse_time(super::util::meta_str(&cj.v, "creationTimestamp")).unwrap_or(now);
        let last_schedule = old
            .get("lastScheduleTime")
            .and_then(Value::as_str)
            .and_then(parse_time);
        let earliest = last_schedule.unwrap_or(created);
        let suspended = cj.v.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
        let mut new_schedule = last_schedule;
        if !suspended && let Some(t) = schedule.latest_between(earliest, now) {
            let too_late = int_at(&cj.v, "/spec/startingDeadlineSeconds")
                .is_some_and(|d| (now - t).num_seconds() > d);
            let policy =
                cj.v.pointer("/spec/concurrencyPolicy")
                    .and_then(Value::as_str)
                    .unwrap_or("Allow");
            if too_late {
                self.cj_event(
                    &cj,
                    true,
                    "MissSchedule",
                    format!("Missed scheduled time to start a job: {}", t.to_rfc3339()),
                );
                new_schedule = Some(t);
            } else if policy == "Forbid" && !active_names.is_empty() {
                // Skipped, as the real controller does; it is retried at the next schedule.
                new_schedule = last_schedule;
            } else {
                if policy == "Replace" {
                    for (name, _, _) in std::mem::take(&mut active_names) {
                        self.delete(Kind::Job, cj.ns(), &name, KCM)?;
                        self.cj_event(
                            &cj,
                            false,
                            "SuccessfulDelete",
                            format!("Deleted job {name}"),
                        );
                    }
                }
                let name = format!("{}-{}", cj.name(), t.timestamp() / 60);
                let template =
                    cj.v.pointer("/spec/jobTemplate")
                        .cloned()
                        .unwrap_or_else(|| json!({}));
                let mut meta = json!({
                    "name": name,
                    "namespace": cj.ns(),
                    "ownerReferences": [controller_ref("batch/v1", "CronJob", cj.name(), cj.uid())],
                });
                if let Some(l) = template.pointer("/metadata/labels") {
                    meta["labels"] = l.clone();
                }
                let mut annotations = template
                    .pointer("/metadata/annotations")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                annotations.insert(
                    "batch.kubernetes.io/cronjob-scheduled-timestamp".into(),
                    json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                );
                meta["annotations"] = Value::Object(annotations);
                let job = json!({"metadata": meta, "spec": template.get("spec").cloned().unwrap_or_else(|| json!({}))});
                match self.create(Kind::Job, cj.ns(), job, KCM) {
                    Ok(j) => {
                        active_names.push((
                            name.clone(),
                            super::util::meta_str(&j, "uid").to_string(),
                            super::util::meta_str(&j, "resourceVersion").to_string(),
                        ));
                        self.cj_event(
                            &cj,
                            false,
                            "SuccessfulCreate",
                            format!("Created job {name}"),
                        );
                    }
                    Err(SimError::Api { code: 409, .. }) => {}
                    Err(e) => return Err(e),
                }
                new_schedule = Some(t);
            }
        }
        let mut status = json!({});
        if !active_names.is_empty() {
            status["active"] = json!(active_names
                .iter()
                .map(|(name, uid, rv)| json!({"apiVersion": "batch/v1", "kind": "Job", "name": name,
                    "namespace": cj.ns(), "uid": uid, "resourceVersion": rv}))
                .collect::<Vec<_>>());
        }
        let fmt = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        if let Some(t) = new_schedule {
            status["lastScheduleTime"] = json!(fmt(t));
        }
        if let Some(t) = last_success {
            status["lastSuccessfulTime"] = json!(fmt(t));
        }
        self.write_status(Kind::CronJob, &cj, status, KCM)?;
        if let Some(next) = schedule.next_after(now) {
            let wait = (next - now).to_std().unwrap_or_default() + Duration::from_millis(50);
            self.after(wait, key.clone());
        }
        Ok(())
    }

    fn cj_event(&mut self, cj: &Obj, warning: bool, reason: &'static str, message: String) {
        self.event(
            Kind::CronJob,
            &cj.v,
            Ev {
                warning,
                reason,
                message,
                component: "cronjob-controller",
                host: None,
                field_path: None,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_time(s).unwrap()
    }

    #[test]
    fn parses_fields_ranges_steps_names_and_macros() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri").unwrap();
        // Friday 2026-11-27 17:50 → next is Monday 09:00.
        assert_eq!(
            s.next_after(at("2026-11-27T17:50:00Z")),
            Some(at("2026-11-30T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(at("2026-11-27T10:07:30Z")),
            Some(at("2026-11-27T10:15:00Z"))
        );
        let h = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            h.next_after(at("2026-11-27T10:00:00Z")),
            Some(at("2026-11-27T11:00:00Z"))
        );
        let y = Schedule::parse("0 0 29 feb *").unwrap();
        assert_eq!(
            y.next_after(at("2026-03-01T00:00:00Z")),
            Some(at("2028-02-29T00:00:00Z"))
        );
        // Both day fields restricted: either matches (the 1st, or any Sunday).
        let e = Schedule::parse("0 12 1 * 0").unwrap();
        assert_eq!(
            e.next_after(at("2026-11-27T13:00:00Z")),
            Some(at("2026-11-29T12:00:00Z"))
        );
        assert_eq!(
            e.next_after(at("2026-11-29T13:00:00Z")),
            Some(at("2026-12-01T12:00:00Z"))
        );
        assert!(Schedule::parse("TZ=UTC 0 * * * *").is_ok());
    }

    #[test]
    fn refuses_bad_schedules_with_the_reason() {
        for (bad, why) in [
            ("* * * *", "expected 5 fields"),
            ("61 * * * *", "minute"),
            ("* * * * mon-xyz", "day of week"),
            ("*/0 * * * *", "step of 0"),
            ("TZ=Europe/Paris 0 * * * *", "only UTC"),
        ] {
            let e = Schedule::parse(bad).unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn latest_missed_time_is_found() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(
            s.latest_between(at("2026-11-27T10:00:00Z"), at("2026-11-27T10:17:00Z")),
            Some(at("2026-11-27T10:15:00Z"))
        );
        assert_eq!(
            s.latest_between(at("2026-11-27T10:15:00Z"), at("2026-11-27T10:17:00Z")),
            None
        );
    }
}
