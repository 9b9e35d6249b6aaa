//! Which phase of a fault a measured row belongs to: one rule for the verdict's before/during/after
//! medians (written into run.json) and for the report's row shading, so the two never disagree.

/// When a fault held, in one clock: it was being applied from `before_end` to `from`, surely held
/// from `from` to `to`, and was being reverted from `to` until `after_start`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub before_end: f64,
    pub from: f64,
    pub to: f64,
    pub after_start: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Before,
    Applying,
    During,
    Reverting,
    After,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Before => "before",
            Phase::Applying => "applying",
            Phase::During => "during",
            Phase::Reverting => "reverting",
            Phase::After => "after",
        }
    }
}

impl Window {
    /// From a fault's times: when it was sent, when every agent confirmed it in effect, when the
    /// revert began and when it was done. Missing send or revert-began times close the spans;
    /// a fault never reverted holds until `end`.
    pub fn of(
        sent: Option<f64>,
        applied: f64,
        revert_began: Option<f64>,
        reverted: Option<f64>,
        end: f64,
    ) -> Window {
        let r = reverted.unwrap_or(end);
        Window {
            before_end: sent.unwrap_or(applied).min(applied),
            from: applied,
            to: revert_began.unwrap_or(r).min(r),
            after_start: r,
        }
    }

    /// The phase of a row whose middle is at `t`.
    pub fn place(&self, t: f64) -> Phase {
        if t < self.before_end {
            Phase::Before
        } else if t < self.from {
            Phase::Applying
        } else if t < self.to {
            Phase::During
        } else if t < self.after_start {
            Phase::Reverting
        } else {
            Phase::After
        }
    }
}

/// The phase of a row against several faults: during one of them wins, then being applied or
/// reverted, then after any; else before.
pub fn place_among(windows: &[Window], t: f64) -> Phase {
    let placed: Vec<Phase> = windows.iter().map(|w| w.place(t)).collect();
    [
        Phase::During,
        Phase::Applying,
        Phase::Reverting,
        Phase::After,
    ]
    .into_iter()
    .find(|p| placed.contains(p))
    .unwrap_or(Phase::Before)
}

/// Each row's middle, from its start to the next row's start (the last row: its start), so a slow
/// row that starts just before a fault but runs through it is placed in the fault.
pub fn middles(starts: &[f64]) -> Vec<f64> {
    let mut sorted = starts.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    starts
        .iter()
        .map(|&s| {
            let i = sorted.partition_point(|&t| t <= s);
            sorted.get(i).map_or(s, |&end| (s + end) / 2.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_are_half_open_and_missing_times_close_them() {
        let w = Window::of(Some(10.0), 10.2, Some(20.0), Some(21.0), 99.0);
        let names: Vec<&str> = [9.9, 10.0, 10.2, 19.99, 20.0, 21.0]
            .iter()
            .map(|&t| w.place(t).name())
            .collect();
        assert_eq!(
            names,
            [
                "before",
                "applying",
                "during",
                "during",
                "reverting",
                "after"
            ]
        );
        let bare = Window::of(None, 5.0, None, None, 30.0);
        assert_eq!(bare.place(4.9), Phase::Before);
        assert_eq!(bare.place(5.0), Phase::During);
        assert_eq!(bare.place(29.9), Phase::During);
        assert_eq!(bare.place(30.0), Phase::After);
    }

    #[test]
    fn during_any_fault_wins_then_the_transitions_then_after() {
        let a = Window::of(Some(1.0), 2.0, Some(4.0), Some(5.0), 99.0);
        let b = Window::of(Some(4.5), 6.0, Some(8.0), Some(9.0), 99.0);
        assert_eq!(place_among(&[a, b], 0.5), Phase::Before);
        assert_eq!(place_among(&[a, b], 4.2), Phase::Reverting);
        assert_eq!(place_among(&[a, b], 5.5), Phase::Applying);
        assert_eq!(place_among(&[a, b], 7.0), Phase::During);
        assert_eq!(place_among(&[a, b], 9.5), Phase::After);
        assert_eq!(place_among(&[], 1.0), Phase::Before);
    }

    #[test]
    fn a_row_runs_until_the_next_one_starts() {
        assert_eq!(middles(&[3.0, 1.0, 2.0, 2.0]), [3.0, 1.5, 2.5, 2.5]);
        assert!(middles(&[]).is_empty());
    }
}
