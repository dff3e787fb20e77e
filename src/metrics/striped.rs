//! [`StripedHistogram`]: a latency histogram that workers observe without contending.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use prometheus::core::{Collector, Desc};
use prometheus::proto;

use super::LATENCY_BUCKETS;

/// Stripes of a [`StripedHistogram`]: more than the workers of most machines; a thread
/// beyond them shares a stripe (still correct, only contended).
const STRIPES: usize = 16;

/// The next thread's stripe.
static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's stripe of every [`StripedHistogram`], chosen on its first observation.
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % STRIPES;
}

/// A histogram with [`LATENCY_BUCKETS`] whose observations go to the observing thread's
/// stripe (a cache line or two of its own), so that workers observing each request do
/// not contend on one set of atomics as `prometheus::Histogram`'s do; a scrape adds the
/// stripes up. Exposed exactly as a `prometheus::Histogram` with the same name, help and
/// buckets (no labels). Nothing is lost: every observation is one relaxed add on its
/// bucket, and the count is the sum of the buckets, so a scrape always sees a count that
/// matches its buckets (the sum may trail by the observations in flight). Clones share
/// the stripes.
#[derive(Clone)]
pub(crate) struct StripedHistogram {
    desc: Desc,
    stripes: Arc<[Stripe]>,
}

/// One thread's share: a count per bucket, one more for above the last bound, and the
/// sum of the observed values (f64 bits).
#[repr(align(128))]
struct Stripe {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum: AtomicU64,
}

impl StripedHistogram {
    pub(super) fn new(name: &str, help: &str) -> Self {
        StripedHistogram {
            desc: Desc::new(name.into(), help.into(), vec![], Default::default())
                .expect("valid metric"),
            stripes: (0..STRIPES)
                .map(|_| Stripe {
                    buckets: std::array::from_fn(|_| AtomicU64::new(0)),
                    sum: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    pub(crate) fn observe(&self, seconds: f64) {
        let stripe = &self.stripes[STRIPE.with(|s| *s)];
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        stripe.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        // Another thread shares this stripe only beyond `STRIPES` threads: the loop
        // almost always ends at once.
        let _ = stripe
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + seconds).to_bits())
            });
    }

    /// The histogram as the scrape sees it.
    fn proto(&self) -> proto::Histogram {
        let mut counts = [0u64; LATENCY_BUCKETS.len() + 1];
        let mut sum = 0.0;
        for stripe in self.stripes.iter() {
            for (count, bucket) in counts.iter_mut().zip(&stripe.buckets) {
                *count += bucket.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(stripe.sum.load(Ordering::Relaxed));
        }
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
        for (count, bound) in counts.iter().zip(LATENCY_BUCKETS) {
            cumulative += count;
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound);
            buckets.push(b);
        }
        h.set_bucket(buckets);
        h.set_sample_count(cumulative + counts[LATENCY_BUCKETS.len()]);
        h.set_sample_sum(sum);
        h
    }

    /// How many observations so far.
    #[cfg(test)]
    fn count(&self) -> u64 {
        self.proto().get_sample_count()
    }
}

impl Collector for StripedHistogram {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<proto::MetricFamily> {
        let mut metric = proto::Metric::default();
        metric.set_histogram(self.proto());
        let mut family = proto::MetricFamily::default();
        family.set_name(self.desc.fq_name.clone());
        family.set_help(self.desc.help.clone());
        family.set_field_type(proto::MetricType::HISTOGRAM);
        family.set_metric(vec![metric]);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Encoder, Histogram, HistogramOpts, Registry, TextEncoder};

    #[test]
    fn a_striped_histogram_renders_as_a_prometheus_one() {
        let name = "hti_guard_test_duration_seconds";
        let plain = Histogram::with_opts(
            HistogramOpts::new(name, "help").buckets(LATENCY_BUCKETS.to_vec()),
        )
        .unwrap();
        let striped = StripedHistogram::new(name, "help");
        // Values whose sums are exact in any order; one above the last bound, one on a bound.
        let values = [0.0, 0.0005, 0.25, 0.5, 0.5, 1.0, 20.0, 0.125];
        std::thread::scope(|scope| {
            for chunk in values.chunks(2) {
                let (plain, striped) = (&plain, &striped);
                scope.spawn(move || {
                    for &v in chunk {
                        plain.observe(v);
                        striped.observe(v);
                    }
                });
            }
        });
        let render = |c: Box<dyn Collector>| {
            let registry = Registry::new();
            registry.register(c).unwrap();
            let mut out = Vec::new();
            TextEncoder::new()
                .encode(&registry.gather(), &mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        let want = render(Box::new(plain));
        assert!(want.contains(&format!("{name}_count 8")), "{want}");
        assert_eq!(render(Box::new(striped.clone())), want);
        assert_eq!(striped.count(), 8);
    }
}
