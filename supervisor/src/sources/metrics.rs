//! Source metrics, registered on the daemon's registry: polls and fetches
//! by outcome (`ok` or the problem), bytes fetched, and whether the last
//! poll of each source succeeded.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub source: String,
    /// `ok` or the problem (`unreachable`, `digest_mismatch`, ...).
    pub outcome: String,
}

#[derive(Debug, Clone, Default)]
pub struct SourceMetrics {
    polls: Family<OutcomeLabels, Counter>,
    fetches: Family<OutcomeLabels, Counter>,
    fetched_bytes: Family<SourceLabel, Counter>,
    up: Family<SourceLabel, Gauge>,
}

impl SourceMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "source_polls",
            "Polls of S3 sources by outcome (ok or the problem)",
            self.polls.clone(),
        );
        r.register(
            "source_fetches",
            "Packages fetched from S3 sources by outcome (ok or the problem)",
            self.fetches.clone(),
        );
        r.register(
            "source_fetched_bytes",
            "Bytes downloaded from S3 sources",
            self.fetched_bytes.clone(),
        );
        r.register(
            "source_up",
            "1 when the last poll of the source succeeded",
            self.up.clone(),
        );
    }

    pub fn poll(&self, source: &str, outcome: &str) {
        self.polls
            .get_or_create(&OutcomeLabels {
                source: source.into(),
                outcome: outcome.into(),
            })
            .inc();
        self.up
            .get_or_create(&SourceLabel {
                source: source.into(),
            })
            .set(i64::from(outcome == "ok"));
    }

    pub fn fetch(&self, source: &str, outcome: &str, bytes: u64) {
        self.fetches
            .get_or_create(&OutcomeLabels {
                source: source.into(),
                outcome: outcome.into(),
            })
            .inc();
        if bytes > 0 {
            self.fetched_bytes
                .get_or_create(&SourceLabel {
                    source: source.into(),
                })
                .inc_by(bytes);
        }
    }
}
