//! What HAProxy counted of a server's answers (`show stat`), for judging a canary.

/// What a server answered since its HAProxy process started (they reset on a reload):
/// HTTP responses by class (`hrsp_1xx` ... `hrsp_5xx`, `hrsp_other`; HTTP mode only), and
/// the errors HAProxy counted for it (`eresp`: responses that failed, `econ`: connections
/// that failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    pub responses: [u64; 6],
    pub eresp: u64,
    pub econ: u64,
}

impl Counters {
    /// Requests the server was sent: every response, and every attempt that failed.
    pub fn requests(&self) -> u64 {
        self.responses.iter().sum::<u64>() + self.eresp + self.econ
    }

    /// Requests that failed on the server's side: 5xx answers, failed responses, failed
    /// connections.
    pub fn errors(&self) -> u64 {
        self.responses[4] + self.eresp + self.econ
    }

    /// Whether any counter went down since `earlier`: a new process (a reload) started
    /// from zero.
    pub fn reset_since(&self, earlier: &Counters) -> bool {
        self.responses
            .iter()
            .zip(&earlier.responses)
            .any(|(now, before)| now < before)
            || self.eresp < earlier.eresp
            || self.econ < earlier.econ
    }

    /// What was counted since `earlier` (each counter at least zero).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut responses = [0; 6];
        for (index, slot) in responses.iter_mut().enumerate() {
            *slot = self.responses[index].saturating_sub(earlier.responses[index]);
        }
        Counters {
            responses,
            eresp: self.eresp.saturating_sub(earlier.eresp),
            econ: self.econ.saturating_sub(earlier.econ),
        }
    }

    pub fn add(&mut self, other: &Counters) {
        for (slot, more) in self.responses.iter_mut().zip(&other.responses) {
            *slot += more;
        }
        self.eresp += other.eresp;
        self.econ += other.econ;
    }
}

/// The `show stat` columns of `Counters`, in its order.
pub(super) const RESPONSE_COLUMNS: [&str; 6] = [
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
];
