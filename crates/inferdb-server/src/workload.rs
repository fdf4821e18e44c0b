//! The reference workload of `shared/WORKLOAD.md`: card payments, generated
//! deterministically from a seed.
//!
//! [`Generator`] yields one JSON object per event for the `transactions`
//! stream of `examples/payments/spec.toml`, with the fields in the order
//! `entity_id, ts, amount, merchant_id, category, country, channel,
//! card_present`. [`write_ndjson`] streams them as NDJSON; the CLI (`inferdb
//! gen`), the demo and the benchmarks all read the workload from here, so that
//! every figure is measured on the same data.
//!
//! How an event is drawn (all from one seeded [`SmallRng`], in a fixed order,
//! so that the same [`WorkloadConfig`] always gives byte-identical output):
//!
//! - the user is Zipf(1.1)-distributed over `user_000000..user_099999`, rank 1
//!   being `user_000000`;
//! - `ts` spreads 24 h of simulated time evenly over the event count; about
//!   5 % of events are shifted 1 ms to 4.999 s earlier than their slot, which
//!   keeps every event within the stream's 5 s lateness of the running maximum
//!   (never before `start_ms` either);
//! - `amount` is log-normal (mu 3.0, sigma 1.2) rounded to cents;
//! - `merchant_id` is uniform, `category` uniform over the 16 categories,
//!   `country` the user's home country 80 % of the time (a fixed function of
//!   the user index, independent of the seed) and uniform otherwise, `channel`
//!   web 40 % / app 35 % / pos 25 %, and `card_present` is true iff the channel
//!   is `pos`.
//!
//! Bad events are picked by a second RNG (seeded from the same seed), by
//! selection sampling, so that exactly [`WorkloadConfig::bad_events`] of them
//! occur; their kinds cycle through [`BadKind`] in declaration order. The good
//! content of every event does not depend on `bad_fraction`: a bad event is a
//! good one with one defect applied.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, Zipf};

/// Number of users (`user_000000` … `user_099999`).
pub const USERS: u64 = 100_000;
/// Number of merchants (`m_0000` … `m_9999`).
pub const MERCHANTS: u64 = 10_000;
/// Zipf exponent of the user distribution.
pub const ZIPF_EXPONENT: f64 = 1.1;
/// 2026-01-01T00:00:00Z in epoch milliseconds, the default start of the stream.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;
/// Default share of deliberately bad events (0.1 %).
pub const DEFAULT_BAD_FRACTION: f64 = 0.001;
/// Simulated time covered by one workload, whatever its size.
pub const SPAN_MS: i64 = 24 * 3600 * 1000;
/// Largest backward shift of an out-of-order event, in milliseconds. It stays
/// strictly under the stream's 5 s lateness.
pub const MAX_SHIFT_MS: i64 = 4_999;
/// Share of events shifted earlier than their slot.
pub const OUT_OF_ORDER_FRACTION: f64 = 0.05;
/// Share of events whose country is the user's home country.
pub const HOME_COUNTRY_FRACTION: f64 = 0.8;

/// The 16 categories, in the order of the spec.
pub const CATEGORIES: [&str; 16] = [
    "grocery",
    "fuel",
    "travel",
    "electronics",
    "fashion",
    "dining",
    "pharmacy",
    "gaming",
    "utilities",
    "education",
    "entertainment",
    "home",
    "auto",
    "health",
    "gifts",
    "other",
];

/// The 32 ISO 3166-1 alpha-2 country codes events use.
pub const COUNTRIES: [&str; 32] = [
    "US", "GB", "DE", "FR", "ES", "IT", "NL", "BE", "SE", "NO", "DK", "FI", "PL", "PT", "IE", "AT",
    "CH", "CZ", "CA", "MX", "BR", "AR", "JP", "KR", "CN", "IN", "SG", "AU", "NZ", "ZA", "AE", "TR",
];

/// The three channels, in the order of the spec.
pub const CHANNELS: [&str; 3] = ["web", "app", "pos"];
/// The category bad events of kind [`BadKind::UnknownCategory`] carry.
pub const UNKNOWN_CATEGORY: &str = "weapons";

/// Cumulative channel weights: web 40 %, app 35 %, pos 25 %.
const CHANNEL_CUMULATIVE: [f64; 2] = [0.40, 0.75];

/// Named workload sizes of `shared/WORKLOAD.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 100,000 events (tests).
    Small,
    /// 1,000,000 events (CI benchmarks).
    Medium,
    /// 10,000,000 events (benchmarks run by hand).
    Large,
}

impl Size {
    /// Number of events of this size.
    pub fn events(self) -> u64 {
        match self {
            Size::Small => 100_000,
            Size::Medium => 1_000_000,
            Size::Large => 10_000_000,
        }
    }

    /// The lower-case name, as accepted by [`FromStr`].
    pub fn name(self) -> &'static str {
        match self {
            Size::Small => "small",
            Size::Medium => "medium",
            Size::Large => "large",
        }
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A size name that is not one of `small`, `medium`, `large`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workload size {0:?}: expected one of small, medium, large")]
pub struct UnknownSize(pub String);

impl FromStr for Size {
    type Err = UnknownSize;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" => Ok(Size::Small),
            "medium" => Ok(Size::Medium),
            "large" => Ok(Size::Large),
            _ => Err(UnknownSize(s.to_string())),
        }
    }
}

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadConfig {
    /// Number of events, bad ones included.
    pub events: u64,
    /// Seed of every random choice.
    pub seed: u64,
    /// Event time of the first slot, epoch milliseconds.
    pub start_ms: i64,
    /// Share of deliberately bad events; the count is
    /// `round(bad_fraction * events)` (see [`WorkloadConfig::bad_events`]).
    pub bad_fraction: f64,
}

impl WorkloadConfig {
    /// `events` events from `seed`, with the default start and bad fraction.
    pub fn new(events: u64, seed: u64) -> Self {
        WorkloadConfig {
            events,
            seed,
            start_ms: DEFAULT_START_MS,
            bad_fraction: DEFAULT_BAD_FRACTION,
        }
    }

    /// A named size from `seed`, with the default start and bad fraction.
    pub fn sized(size: Size, seed: u64) -> Self {
        Self::new(size.events(), seed)
    }

    /// Exactly how many bad events the generator emits:
    /// `round(bad_fraction * events)`, clamped to `0..=events` (a NaN or
    /// negative fraction gives 0).
    pub fn bad_events(&self) -> u64 {
        let f = self.bad_fraction;
        if f.is_nan() || f <= 0.0 {
            return 0;
        }
        let n = (f.min(1.0) * self.events as f64).round();
        (n as u64).min(self.events)
    }
}

impl Default for WorkloadConfig {
    /// The `small` workload with seed 42.
    fn default() -> Self {
        Self::sized(Size::Small, 42)
    }
}

/// The defect of a deliberately bad event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadKind {
    /// `amount` or `merchant_id` is absent.
    MissingField,
    /// `amount` is a string like `"12.50x"`, or `card_present` is `"yes"`.
    WrongType,
    /// `amount` is negative.
    NegativeAmount,
    /// `category` is `"weapons"`.
    UnknownCategory,
}

impl BadKind {
    /// All kinds, in the order bad events cycle through them.
    pub const ALL: [BadKind; 4] = [
        BadKind::MissingField,
        BadKind::WrongType,
        BadKind::NegativeAmount,
        BadKind::UnknownCategory,
    ];
}

/// One generated event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedEvent {
    /// One JSON object, without a trailing newline.
    pub line: String,
    /// `Some` when the event is deliberately bad, and how.
    pub bad: Option<BadKind>,
}

/// What [`write_ndjson`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GenSummary {
    /// Lines written, bad ones included.
    pub events: u64,
    /// Deliberately bad lines among them.
    pub bad: u64,
}

/// The deterministic event generator; an iterator of [`GeneratedEvent`].
#[derive(Debug, Clone)]
pub struct Generator {
    events: u64,
    start_ms: i64,
    next: u64,
    rng: SmallRng,
    users: Zipf<f64>,
    amounts: LogNormal<f64>,
    /// Selection sampling of the bad events: its own stream, so that the good
    /// content of the events does not depend on the bad fraction.
    bad_rng: SmallRng,
    bad_left: u64,
    bad_emitted: u64,
}

/// The values of one event before it is written.
struct Event {
    user: u64,
    ts_ms: i64,
    cents: u64,
    merchant: u64,
    category: usize,
    country: usize,
    channel: usize,
}

/// How a bad event departs from its good content.
#[derive(Clone, Copy)]
enum Defect {
    DropAmount,
    DropMerchant,
    AmountString,
    CardPresentString,
    NegativeAmount,
    UnknownCategory,
}

impl Generator {
    /// A generator of the events `cfg` describes.
    pub fn new(cfg: &WorkloadConfig) -> Generator {
        Generator {
            events: cfg.events,
            start_ms: cfg.start_ms,
            next: 0,
            rng: SmallRng::seed_from_u64(cfg.seed),
            users: zipf_users(),
            amounts: lognormal_amounts(),
            bad_rng: SmallRng::seed_from_u64(splitmix64(cfg.seed ^ 0xBAD0_BAD0_BAD0_BAD0)),
            bad_left: cfg.bad_events(),
            bad_emitted: 0,
        }
    }

    /// Writes the next event into `buf` (cleared first) and says whether it
    /// is bad; `None` when the stream is over.
    fn fill(&mut self, buf: &mut String) -> Option<Option<BadKind>> {
        if self.next >= self.events {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let event = self.draw(i);
        let defect = self.pick_defect(i);
        buf.clear();
        write_event(buf, &event, defect);
        Some(defect.map(|d| d.kind()))
    }

    fn draw(&mut self, i: u64) -> Event {
        let rng = &mut self.rng;
        let user = sample_user(&self.users, rng);
        // Slot i of `events` evenly spread over the span; the running maximum
        // of emitted timestamps never exceeds the current slot, so a shift of
        // at most MAX_SHIFT_MS keeps the event within the lateness.
        let slot = self.start_ms + ((i as i128 * SPAN_MS as i128) / self.events as i128) as i64;
        let ts_ms = if rng.random_bool(OUT_OF_ORDER_FRACTION) {
            (slot - rng.random_range(1..=MAX_SHIFT_MS)).max(self.start_ms)
        } else {
            slot
        };
        let amount: f64 = self.amounts.sample(rng);
        let cents = (amount * 100.0).round() as u64;
        let merchant = rng.random_range(0..MERCHANTS);
        let category = rng.random_range(0..CATEGORIES.len());
        let country = if rng.random_bool(HOME_COUNTRY_FRACTION) {
            home_country(user)
        } else {
            rng.random_range(0..COUNTRIES.len())
        };
        let c: f64 = rng.random();
        let channel = CHANNEL_CUMULATIVE
            .iter()
            .position(|&edge| c < edge)
            .unwrap_or(CHANNELS.len() - 1);
        Event {
            user,
            ts_ms,
            cents,
            merchant,
            category,
            country,
            channel,
        }
    }

    /// Selection sampling (Knuth's algorithm S): event `i` is bad with
    /// probability (bad left) / (events left), which gives exactly the
    /// promised count.
    fn pick_defect(&mut self, i: u64) -> Option<Defect> {
        if self.bad_left == 0 {
            return None;
        }
        let remaining = self.events - i;
        if self.bad_rng.random_range(0..remaining) >= self.bad_left {
            return None;
        }
        self.bad_left -= 1;
        let kind = BadKind::ALL[(self.bad_emitted % 4) as usize];
        self.bad_emitted += 1;
        let first = self.bad_rng.random_bool(0.5);
        Some(match kind {
            BadKind::MissingField if first => Defect::DropAmount,
            BadKind::MissingField => Defect::DropMerchant,
            BadKind::WrongType if first => Defect::AmountString,
            BadKind::WrongType => Defect::CardPresentString,
            BadKind::NegativeAmount => Defect::NegativeAmount,
            BadKind::UnknownCategory => Defect::UnknownCategory,
        })
    }
}

impl Defect {
    fn kind(self) -> BadKind {
        match self {
            Defect::DropAmount | Defect::DropMerchant => BadKind::MissingField,
            Defect::AmountString | Defect::CardPresentString => BadKind::WrongType,
            Defect::NegativeAmount => BadKind::NegativeAmount,
            Defect::UnknownCategory => BadKind::UnknownCategory,
        }
    }
}

impl Iterator for Generator {
    type Item = GeneratedEvent;

    fn next(&mut self) -> Option<GeneratedEvent> {
        let mut line = String::with_capacity(192);
        let bad = self.fill(&mut line)?;
        Some(GeneratedEvent { line, bad })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = usize::try_from(self.events - self.next).unwrap_or(usize::MAX);
        (left, Some(left))
    }
}

/// Writes the workload as NDJSON (one event per line, `\n` after each) to
/// `out`, buffering internally, and flushes it.
pub fn write_ndjson(cfg: &WorkloadConfig, out: &mut impl Write) -> io::Result<GenSummary> {
    let mut generator = Generator::new(cfg);
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut line = String::with_capacity(256);
    let mut summary = GenSummary::default();
    while let Some(bad) = generator.fill(&mut line) {
        line.push('\n');
        out.write_all(line.as_bytes())?;
        summary.events += 1;
        if bad.is_some() {
            summary.bad += 1;
        }
    }
    out.flush()?;
    Ok(summary)
}

/// The id of user `i`: `user_000042`.
pub fn user_id(i: u64) -> String {
    format!("user_{i:06}")
}

/// The id of merchant `i`: `m_0042`.
pub fn merchant_id(i: u64) -> String {
    format!("m_{i:04}")
}

/// The home country of user `i`, an index into [`COUNTRIES`]: a fixed hash of
/// the user index, the same for every seed.
pub fn home_country(user: u64) -> usize {
    (splitmix64(user.wrapping_add(0x5EED_C0DE)) % COUNTRIES.len() as u64) as usize
}

/// Zipf(1.1) over the 100,000 users, the same law as the events', for
/// benchmarks that pick users to read. Deterministic per seed.
#[derive(Debug, Clone)]
pub struct UserSampler {
    rng: SmallRng,
    users: Zipf<f64>,
}

impl UserSampler {
    /// A sampler seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        UserSampler {
            rng: SmallRng::seed_from_u64(seed),
            users: zipf_users(),
        }
    }

    /// The index of the next user (0 is the hottest).
    pub fn next_index(&mut self) -> u64 {
        sample_user(&self.users, &mut self.rng)
    }

    /// The id of the next user, like `user_000042`.
    pub fn next_user(&mut self) -> String {
        user_id(self.next_index())
    }
}

#[allow(clippy::unwrap_used)] // constant, valid parameters
fn zipf_users() -> Zipf<f64> {
    // n >= 1 and s >= 0: `new` cannot fail.
    Zipf::new(USERS as f64, ZIPF_EXPONENT).unwrap()
}

#[allow(clippy::unwrap_used)] // constant, valid parameters
fn lognormal_amounts() -> LogNormal<f64> {
    // sigma >= 0: `new` cannot fail.
    LogNormal::new(3.0, 1.2).unwrap()
}

fn sample_user(users: &Zipf<f64>, rng: &mut SmallRng) -> u64 {
    // Zipf yields a rank in [1, n] as a float; rank 1 is user_000000.
    let rank = users.sample(rng) as u64;
    rank.clamp(1, USERS) - 1
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn write_event(buf: &mut String, e: &Event, defect: Option<Defect>) {
    buf.push_str("{\"entity_id\":\"user_");
    push_padded(buf, e.user, 6);
    buf.push_str("\",\"ts\":\"");
    push_rfc3339_ms(buf, e.ts_ms);
    buf.push('"');
    match defect {
        Some(Defect::DropAmount) => {}
        Some(Defect::AmountString) => {
            buf.push_str(",\"amount\":\"");
            push_cents(buf, e.cents);
            buf.push_str("x\"");
        }
        Some(Defect::NegativeAmount) => {
            buf.push_str(",\"amount\":-");
            push_cents(buf, e.cents.max(1));
        }
        _ => {
            buf.push_str(",\"amount\":");
            push_cents(buf, e.cents);
        }
    }
    if !matches!(defect, Some(Defect::DropMerchant)) {
        buf.push_str(",\"merchant_id\":\"m_");
        push_padded(buf, e.merchant, 4);
        buf.push('"');
    }
    buf.push_str(",\"category\":\"");
    if matches!(defect, Some(Defect::UnknownCategory)) {
        buf.push_str(UNKNOWN_CATEGORY);
    } else {
        buf.push_str(CATEGORIES[e.category]);
    }
    buf.push_str("\",\"country\":\"");
    buf.push_str(COUNTRIES[e.country]);
    buf.push_str("\",\"channel\":\"");
    buf.push_str(CHANNELS[e.channel]);
    buf.push_str("\",\"card_present\":");
    if matches!(defect, Some(Defect::CardPresentString)) {
        buf.push_str("\"yes\"");
    } else if CHANNELS[e.channel] == "pos" {
        buf.push_str("true");
    } else {
        buf.push_str("false");
    }
    buf.push('}');
}

/// `1234` cents as `12.34`.
fn push_cents(buf: &mut String, cents: u64) {
    push_padded(buf, cents / 100, 1);
    buf.push('.');
    push_padded(buf, cents % 100, 2);
}

/// Decimal digits of `v`, left-padded with zeros to `width`.
fn push_padded(buf: &mut String, mut v: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut n = 0;
    while v > 0 || n == 0 {
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
    }
    for _ in n..width {
        buf.push('0');
    }
    for &d in digits[..n].iter().rev() {
        buf.push(char::from(d));
    }
}

/// Epoch milliseconds as RFC 3339 UTC with milliseconds:
/// `2026-01-01T00:00:00.125Z`. Years before 0 or after 9999 are not
/// representable in this form and are clamped to that range.
fn push_rfc3339_ms(buf: &mut String, ms: i64) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000) as u64;
    let (year, month, day) = inferdb_types::time::civil_from_days(days);
    push_padded(buf, year.clamp(0, 9999) as u64, 4);
    buf.push('-');
    push_padded(buf, u64::from(month), 2);
    buf.push('-');
    push_padded(buf, u64::from(day), 2);
    buf.push('T');
    push_padded(buf, in_day / 3_600_000, 2);
    buf.push(':');
    push_padded(buf, in_day / 60_000 % 60, 2);
    buf.push(':');
    push_padded(buf, in_day / 1000 % 60, 2);
    buf.push('.');
    push_padded(buf, in_day % 1000, 3);
    buf.push('Z');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};
    use std::sync::OnceLock;

    const FIELDS: [&str; 8] = [
        "entity_id",
        "ts",
        "amount",
        "merchant_id",
        "category",
        "country",
        "channel",
        "card_present",
    ];

    /// The `small` workload with seed 7, generated once for all tests.
    fn small() -> &'static [GeneratedEvent] {
        static EVENTS: OnceLock<Vec<GeneratedEvent>> = OnceLock::new();
        EVENTS.get_or_init(|| Generator::new(&WorkloadConfig::sized(Size::Small, 7)).collect())
    }

    /// Test-only inverse of `push_rfc3339_ms`, strict about the shape.
    fn parse_ts(s: &str) -> i64 {
        let b = s.as_bytes();
        assert_eq!(b.len(), 24, "{s}");
        assert_eq!(
            (b[4], b[7], b[10], b[13], b[16], b[19], b[23]),
            (b'-', b'-', b'T', b':', b':', b'.', b'Z'),
            "{s}"
        );
        let num = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let (y, m, d) = (num(0..4), num(5..7), num(8..10));
        // days_from_civil (Hinnant)
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400_000
            + num(11..13) * 3_600_000
            + num(14..16) * 60_000
            + num(17..19) * 1000
            + num(20..23)
    }

    fn fmt_ts(ms: i64) -> String {
        let mut s = String::new();
        push_rfc3339_ms(&mut s, ms);
        s
    }

    fn json(line: &str) -> serde_json::Map<String, serde_json::Value> {
        match serde_json::from_str(line) {
            Ok(serde_json::Value::Object(m)) => m,
            other => panic!("not a JSON object: {line}: {other:?}"),
        }
    }

    #[test]
    fn timestamps_format_and_parse() {
        assert_eq!(fmt_ts(DEFAULT_START_MS), "2026-01-01T00:00:00.000Z");
        assert_eq!(fmt_ts(DEFAULT_START_MS + 125), "2026-01-01T00:00:00.125Z");
        assert_eq!(fmt_ts(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(fmt_ts(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(fmt_ts(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
        assert_eq!(fmt_ts(-1), "1969-12-31T23:59:59.999Z");
        for ms in [
            0,
            -1,
            951_782_400_000,
            1_709_210_096_789,
            DEFAULT_START_MS + SPAN_MS - 1,
        ] {
            assert_eq!(parse_ts(&fmt_ts(ms)), ms);
        }
        // Every day boundary over 3 years around the default start.
        for d in -400..800 {
            let ms = DEFAULT_START_MS + d * 86_400_000 + 43_200_123;
            assert_eq!(parse_ts(&fmt_ts(ms)), ms);
        }
    }

    #[test]
    fn size_parses_and_names_choices() {
        assert_eq!("small".parse::<Size>(), Ok(Size::Small));
        assert_eq!("Medium".parse::<Size>(), Ok(Size::Medium));
        assert_eq!("large".parse::<Size>(), Ok(Size::Large));
        let err = "huge".parse::<Size>().unwrap_err().to_string();
        assert!(err.contains("small, medium, large"), "{err}");
        assert_eq!(Size::Small.events(), 100_000);
        assert_eq!(Size::Medium.events(), 1_000_000);
        assert_eq!(Size::Large.events(), 10_000_000);
        assert_eq!(Size::Medium.to_string(), "medium");
    }

    #[test]
    fn ids() {
        assert_eq!(user_id(42), "user_000042");
        assert_eq!(user_id(99_999), "user_099999");
        assert_eq!(merchant_id(42), "m_0042");
        assert_eq!(merchant_id(9_999), "m_9999");
    }

    #[test]
    fn same_config_gives_identical_bytes_and_seed_changes_them() {
        let cfg = WorkloadConfig::new(20_000, 11);
        let mut a = Vec::new();
        let mut b = Vec::new();
        let sa = write_ndjson(&cfg, &mut a).unwrap();
        let sb = write_ndjson(&cfg, &mut b).unwrap();
        assert_eq!(sa, sb);
        assert_eq!(
            sa,
            GenSummary {
                events: 20_000,
                bad: 20
            }
        );
        assert!(a == b, "same config must give byte-identical output");
        assert_eq!(a.iter().filter(|&&c| c == b'\n').count(), 20_000);
        // The iterator and write_ndjson agree.
        let joined: String = Generator::new(&cfg).map(|e| e.line + "\n").collect();
        assert!(joined.as_bytes() == a.as_slice());

        let mut c = Vec::new();
        write_ndjson(&WorkloadConfig::new(20_000, 12), &mut c).unwrap();
        assert!(a != c, "another seed must give other output");
    }

    #[test]
    fn good_events_match_the_schema() {
        let events = small();
        assert_eq!(events.len(), 100_000);
        let categories: HashSet<&str> = CATEGORIES.into_iter().collect();
        let countries: HashSet<&str> = COUNTRIES.into_iter().collect();
        let mut home = 0u64;
        let mut good = 0u64;
        let mut channels: HashMap<String, u64> = HashMap::new();
        for e in events.iter().filter(|e| e.bad.is_none()) {
            good += 1;
            let m = json(&e.line);
            assert_eq!(m.len(), 8, "{}", e.line);
            // Field order in the text.
            let positions: Vec<usize> = FIELDS
                .iter()
                .map(|f| e.line.find(&format!("\"{f}\":")).unwrap())
                .collect();
            assert!(positions.windows(2).all(|w| w[0] < w[1]), "{}", e.line);

            let user = m["entity_id"].as_str().unwrap();
            let idx: u64 = user.strip_prefix("user_").unwrap().parse().unwrap();
            assert_eq!(user, user_id(idx));
            assert!(idx < USERS);
            let merchant = m["merchant_id"].as_str().unwrap();
            let midx: u64 = merchant.strip_prefix("m_").unwrap().parse().unwrap();
            assert_eq!(merchant, merchant_id(midx));
            assert!(midx < MERCHANTS);

            // amount: a JSON number >= 0 written with exactly two decimals.
            let amount = m["amount"].as_f64().unwrap();
            assert!(amount >= 0.0, "{}", e.line);
            let raw = e.line.split("\"amount\":").nth(1).unwrap();
            let raw = &raw[..raw.find(',').unwrap()];
            let (int, frac) = raw.split_once('.').unwrap();
            assert!(
                !int.is_empty() && int.bytes().all(|c| c.is_ascii_digit()),
                "{raw}"
            );
            assert!(
                frac.len() == 2 && frac.bytes().all(|c| c.is_ascii_digit()),
                "{raw}"
            );

            assert!(categories.contains(m["category"].as_str().unwrap()));
            let country = m["country"].as_str().unwrap();
            assert!(countries.contains(country));
            if country == COUNTRIES[home_country(idx)] {
                home += 1;
            }
            let channel = m["channel"].as_str().unwrap();
            assert!(CHANNELS.contains(&channel), "{channel}");
            assert_eq!(m["card_present"].as_bool().unwrap(), channel == "pos");
            *channels.entry(channel.to_string()).or_default() += 1;
            parse_ts(m["ts"].as_str().unwrap());
        }
        // 80 % home plus 1/32 of the other 20 %.
        let share = home as f64 / good as f64;
        assert!((0.80..0.83).contains(&share), "home share {share}");
        let pos = channels["pos"] as f64 / good as f64;
        assert!((0.23..0.27).contains(&pos), "pos share {pos}");
    }

    #[test]
    fn amounts_follow_the_lognormal() {
        let mut logs: Vec<f64> = small()
            .iter()
            .filter(|e| e.bad.is_none())
            .map(|e| json(&e.line)["amount"].as_f64().unwrap().max(0.01).ln())
            .collect();
        logs.sort_by(f64::total_cmp);
        let median = logs[logs.len() / 2];
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let sd = (logs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / logs.len() as f64).sqrt();
        assert!((median - 3.0).abs() < 0.05, "median of ln(amount) {median}");
        assert!((sd - 1.2).abs() < 0.05, "sd of ln(amount) {sd}");
    }

    #[test]
    fn timestamps_stay_within_lateness_and_span_a_day() {
        let mut max = i64::MIN;
        let mut min = i64::MAX;
        let mut late = 0u64;
        for e in small() {
            let m = json(&e.line);
            let ts = parse_ts(m["ts"].as_str().unwrap());
            if ts < max {
                late += 1;
                assert!(
                    max - ts < 5000,
                    "{} ms behind the max: {}",
                    max - ts,
                    e.line
                );
            }
            max = max.max(ts);
            min = min.min(ts);
        }
        assert_eq!(min, DEFAULT_START_MS);
        let span = max - min;
        assert!(span <= SPAN_MS && span > SPAN_MS - 10_000, "span {span} ms");
        // ~5 % shifted; a shift smaller than the slot gap (864 ms here) may
        // still land after the previous event, so count loosely.
        let share = late as f64 / small().len() as f64;
        assert!(
            (0.035..0.055).contains(&share),
            "out-of-order share {share}"
        );
    }

    #[test]
    fn bad_events_are_exactly_promised_and_bad_in_their_way() {
        let events = small();
        let cfg = WorkloadConfig::sized(Size::Small, 7);
        assert_eq!(cfg.bad_events(), 100);
        let mut per_kind: HashMap<BadKind, u64> = HashMap::new();
        let mut variants: HashSet<&str> = HashSet::new();
        for e in events {
            let Some(kind) = e.bad else { continue };
            *per_kind.entry(kind).or_default() += 1;
            let m = json(&e.line);
            match kind {
                BadKind::MissingField => {
                    assert_eq!(m.len(), 7, "{}", e.line);
                    let missing: Vec<&str> =
                        FIELDS.into_iter().filter(|f| !m.contains_key(*f)).collect();
                    assert!(
                        missing == ["amount"] || missing == ["merchant_id"],
                        "{}",
                        e.line
                    );
                    variants.insert(missing[0]);
                }
                BadKind::WrongType => {
                    assert_eq!(m.len(), 8);
                    if let Some(s) = m["amount"].as_str() {
                        assert!(s.ends_with('x') && m["card_present"].is_boolean(), "{s}");
                        variants.insert("amount_string");
                    } else {
                        assert_eq!(m["card_present"].as_str(), Some("yes"), "{}", e.line);
                        variants.insert("card_present_string");
                    }
                }
                BadKind::NegativeAmount => {
                    assert!(m["amount"].as_f64().unwrap() < 0.0, "{}", e.line);
                }
                BadKind::UnknownCategory => {
                    assert_eq!(m["category"].as_str(), Some(UNKNOWN_CATEGORY));
                }
            }
        }
        assert_eq!(per_kind.values().sum::<u64>(), 100);
        for kind in BadKind::ALL {
            assert_eq!(per_kind[&kind], 25, "{kind:?}");
        }
        assert_eq!(variants.len(), 4, "{variants:?}");

        // The count is exact at other fractions too, and the good content of
        // events does not depend on the fraction.
        let cfg = WorkloadConfig {
            bad_fraction: 0.0123,
            ..WorkloadConfig::new(10_000, 3)
        };
        let with: Vec<GeneratedEvent> = Generator::new(&cfg).collect();
        assert_eq!(with.iter().filter(|e| e.bad.is_some()).count(), 123);
        let none = WorkloadConfig {
            bad_fraction: 0.0,
            ..cfg.clone()
        };
        let without: Vec<GeneratedEvent> = Generator::new(&none).collect();
        assert!(without.iter().all(|e| e.bad.is_none()));
        for (a, b) in with.iter().zip(&without) {
            if a.bad.is_none() {
                assert_eq!(a.line, b.line);
            }
        }
        let all = WorkloadConfig {
            bad_fraction: 1.0,
            ..WorkloadConfig::new(40, 3)
        };
        assert!(Generator::new(&all).all(|e| e.bad.is_some()));
    }

    #[test]
    fn hottest_user_holds_its_zipf_share() {
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for e in small() {
            let id = &e.line[14..25];
            *counts.entry(id).or_default() += 1;
        }
        let top = counts["user_000000"] as f64 / small().len() as f64;
        // Theory: 1 / H(100000, 1.1) ≈ 0.135.
        assert!((0.05..0.20).contains(&top), "user_000000 share {top}");
        assert!(counts["user_000000"] > counts.get("user_000001").copied().unwrap_or(0));
        assert!(counts.len() > 10_000, "{} distinct users", counts.len());
    }

    #[test]
    fn user_sampler_is_zipf_and_deterministic() {
        let mut a = UserSampler::new(5);
        let mut b = UserSampler::new(5);
        let xs: Vec<String> = (0..10_000).map(|_| a.next_user()).collect();
        let ys: Vec<String> = (0..10_000).map(|_| b.next_user()).collect();
        assert_eq!(xs, ys);
        let hot = xs.iter().filter(|u| *u == "user_000000").count() as f64 / 10_000.0;
        assert!((0.10..0.17).contains(&hot), "{hot}");
        assert!(xs.iter().all(|u| u.len() == 11 && u.starts_with("user_")));
    }

    #[test]
    fn empty_and_tiny_workloads() {
        let mut out = Vec::new();
        let s = write_ndjson(&WorkloadConfig::new(0, 1), &mut out).unwrap();
        assert_eq!(s, GenSummary::default());
        assert!(out.is_empty());
        let one: Vec<GeneratedEvent> = Generator::new(&WorkloadConfig::new(1, 1)).collect();
        assert_eq!(one.len(), 1);
        assert!(one[0].line.contains("\"ts\":\"2026-01-01T00:00:00.000Z\""));
    }
}
