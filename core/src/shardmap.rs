//! The shard map: every bucket (`user_id mod 1000`) belongs to exactly one shard.
//!
//! This is the one routing function of the system. The backend uses it to refuse users it does not
//! own, shopctl uses it to locate users and check shards, and the nginx map is *generated* from it
//! by [`ShardMap::render_nginx_map`], so nginx and Rust cannot disagree. The bucket is the last three
//! decimal digits of the id because that is what an nginx regex can compute (the original design
//! routed on the first digit, which sent user 12 to the odd shard).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::ids::{ShardName, UserId};

/// Number of buckets; a bucket is `user_id mod BUCKETS`.
pub const BUCKETS: u16 = 1000;

/// The bucket a user id falls in: its last three decimal digits.
pub fn bucket(user: UserId) -> u16 {
    // The remainder is below 1000, so it fits.
    (user.get() % u64::from(BUCKETS)) as u16
}

/// What may happen to a bucket's users right now. Only a move (`shopctl shards move`) changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BucketState {
    /// Its owner serves it.
    #[default]
    Serving,
    /// Its owner serves reads; writes get 503 while its rows are copied for the last time.
    WritesPaused,
    /// Between two owners: nobody serves it (503 with `Retry-After`) until every backend has taken
    /// this map, so no moment has two shards serving it.
    Moving,
}

/// Where one user's request is to be served, by one shard's reading of the map ([`ShardMap::admit`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// This shard serves the user; `writes` is false while the bucket's writes are paused.
    Serve { writes: bool },
    /// The user's bucket is moving, or has just moved away from this shard: 503 with `Retry-After`
    /// (nginx routes the retry by its new map).
    Moving,
    /// Another shard owns the user (a request that bypassed nginx): 421.
    Elsewhere(ShardName),
}

/// The shard map: the owner of every bucket, and its state. Versions are numbered; the current
/// one lives in the auth database ([`crate::control`]), seeded from the config's `buckets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardMap {
    version: u64,
    /// Index = bucket.
    owners: Vec<ShardName>,
    states: Vec<BucketState>,
    /// The shard a bucket last moved away from: it answers the bucket's users 503 (retry), not 421.
    moved_from: Vec<Option<ShardName>>,
}

/// The map as stored: bucket lists as range strings (`"0-9,20"`), readable in the database.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredMap {
    owners: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    writes_paused: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    moving: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    moved_from: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ShardMapError {
    #[error("shard {shard}: bad bucket spec {spec:?}: {why}")]
    BadSpec { shard: String, spec: String, why: String },
    #[error("bucket {bucket} is assigned to both shard {first} and shard {second}")]
    Overlap { bucket: u16, first: String, second: String },
    #[error("buckets {0} are assigned to no shard; every bucket 0-999 needs an owner")]
    Gaps(String),
    #[error("stored shard map: {0}")]
    Stored(String),
}

impl ShardMap {
    /// Builds the map from each shard's bucket spec. A spec is a comma-separated list of
    /// `even`, `odd`, `all`, a bucket `N` or a range `N-M` (inclusive), e.g. `"0-499"` or `"even"`.
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = (&'a ShardName, &'a str)>) -> Result<Self, ShardMapError> {
        let mut owners: Vec<Option<ShardName>> = vec![None; usize::from(BUCKETS)];
        for (shard, spec) in specs {
            for b in parse_spec(spec).map_err(|why| ShardMapError::BadSpec {
                shard: shard.to_string(),
                spec: spec.to_owned(),
                why,
            })? {
                let slot = &mut owners[usize::from(b)];
                if let Some(first) = slot {
                    if first != shard {
                        return Err(ShardMapError::Overlap {
                            bucket: b,
                            first: first.to_string(),
                            second: shard.to_string(),
                        });
                    }
                }
                *slot = Some(shard.clone());
            }
        }
        let gaps: Vec<u16> = (0..BUCKETS).filter(|&b| owners[usize::from(b)].is_none()).collect();
        if !gaps.is_empty() {
            return Err(ShardMapError::Gaps(compress_ranges(&gaps)));
        }
        let n = usize::from(BUCKETS);
        Ok(Self {
            version: 1,
            owners: owners.into_iter().flatten().collect(),
            states: vec![BucketState::Serving; n],
            moved_from: vec![None; n],
        })
    }

    /// The version: 1 for the map the config seeds, one more for every change.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// This map as the next version's starting point: same owners and states, version + 1.
    pub fn next_version(&self) -> Self {
        Self { version: self.version + 1, ..self.clone() }
    }

    pub fn state(&self, bucket: u16) -> BucketState {
        self.states.get(usize::from(bucket)).copied().unwrap_or_default()
    }

    /// How shard `me` is to treat a request of `user`.
    pub fn admit(&self, user: UserId, me: &ShardName) -> Admission {
        let b = usize::from(bucket(user));
        match (self.states[b], &self.owners[b] == me) {
            (BucketState::Moving, _) => Admission::Moving,
            (state, true) => Admission::Serve { writes: state == BucketState::Serving },
            (_, false) if self.moved_from[b].as_ref() == Some(me) => Admission::Moving,
            (_, false) => Admission::Elsewhere(self.owners[b].clone()),
        }
    }

    /// Sets `buckets`' state.
    pub fn set_state(&mut self, buckets: &[u16], state: BucketState) {
        for &b in buckets {
            self.states[usize::from(b)] = state;
        }
    }

    /// Gives `buckets` to `owner`, remembering the owner they leave (see [`Admission::Moving`]).
    pub fn set_owner(&mut self, buckets: &[u16], owner: &ShardName) {
        for &b in buckets {
            let b = usize::from(b);
            if &self.owners[b] != owner {
                self.moved_from[b] = Some(std::mem::replace(&mut self.owners[b], owner.clone()));
            }
        }
    }

    /// The buckets `shard` owns, ascending.
    pub fn buckets_of(&self, shard: &ShardName) -> Vec<u16> {
        (0..BUCKETS).filter(|&b| &self.owners[usize::from(b)] == shard).collect()
    }

    /// The buckets not [`BucketState::Serving`], ascending.
    pub fn unsettled(&self) -> Vec<u16> {
        (0..BUCKETS).filter(|&b| self.states[usize::from(b)] != BucketState::Serving).collect()
    }

    /// The stored form (JSON with range strings); the version is kept beside it.
    pub fn to_json(&self) -> String {
        let ranges = |pick: &dyn Fn(usize) -> bool| {
            compress_ranges(&(0..BUCKETS).filter(|&b| pick(usize::from(b))).collect::<Vec<_>>())
        };
        let mut moved_from: BTreeMap<String, Vec<u16>> = BTreeMap::new();
        for (b, from) in self.moved_from.iter().enumerate() {
            if let Some(from) = from {
                moved_from.entry(from.to_string()).or_default().push(b as u16);
            }
        }
        let stored = StoredMap {
            owners: self.summary().into_iter().map(|(s, r)| (s.to_string(), r)).collect(),
            writes_paused: ranges(&|b| self.states[b] == BucketState::WritesPaused),
            moving: ranges(&|b| self.states[b] == BucketState::Moving),
            moved_from: moved_from.into_iter().map(|(s, bs)| (s, compress_ranges(&bs))).collect(),
        };
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a stored map back; anything inconsistent is an error, never a half map.
    pub fn from_json(version: u64, text: &str) -> Result<Self, ShardMapError> {
        let stored: StoredMap = serde_json::from_str(text).map_err(|e| ShardMapError::Stored(e.to_string()))?;
        let names = stored
            .owners
            .keys()
            .map(|n| ShardName::parse(n).map_err(ShardMapError::Stored))
            .collect::<Result<Vec<_>, _>>()?;
        let mut map = Self::from_specs(names.iter().zip(stored.owners.values().map(String::as_str)))?;
        map.version = version;
        let buckets = |spec: &str| if spec.is_empty() { Ok(Vec::new()) } else { parse_spec(spec) };
        let bad = |why: String| ShardMapError::Stored(why);
        map.set_state(&buckets(&stored.writes_paused).map_err(bad)?, BucketState::WritesPaused);
        map.set_state(&buckets(&stored.moving).map_err(bad)?, BucketState::Moving);
        for (from, spec) in &stored.moved_from {
            let from = ShardName::parse(from).map_err(ShardMapError::Stored)?;
            for b in buckets(spec).map_err(bad)? {
                map.moved_from[usize::from(b)] = Some(from.clone());
            }
        }
        Ok(map)
    }

    /// The shard that owns `user`.
    pub fn shard_for(&self, user: UserId) -> &ShardName {
        &self.owners[usize::from(bucket(user))]
    }

    pub fn owner_of_bucket(&self, bucket: u16) -> Option<&ShardName> {
        self.owners.get(usize::from(bucket))
    }

    /// Buckets per shard, as compact range strings (`"0-9,20"`), for display.
    pub fn summary(&self) -> BTreeMap<&ShardName, String> {
        let mut per: BTreeMap<&ShardName, Vec<u16>> = BTreeMap::new();
        for (b, s) in self.owners.iter().enumerate() {
            per.entry(s).or_default().push(b as u16);
        }
        per.into_iter().map(|(s, bs)| (s, compress_ranges(&bs))).collect()
    }

    /// The nginx side of the routing function: two `map` blocks that turn `$in_var` (the user id
    /// the verifier answered with) into `$out_var` (the shard name, or `unrouted` for anything
    /// that is not a decimal id). The first map takes the last three digits, zero-padded; the
    /// second is an exact-match table of all 1000 buckets.
    pub fn render_nginx_map(&self, in_var: &str, out_var: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Generated by `shopctl nginx render` from shard map version {}. Do not edit by hand.",
            self.version
        );
        let _ = writeln!(s, "# bucket = user_id mod {BUCKETS} = the last three decimal digits of the id.");
        let _ = writeln!(s, "map ${in_var} ${out_var}_bucket {{");
        let _ = writeln!(s, "    default \"\";");
        let _ = writeln!(s, "    \"~^[0-9]*(?<shop_b>[0-9][0-9][0-9])$\" $shop_b;");
        let _ = writeln!(s, "    \"~^(?<shop_b>[0-9][0-9])$\" 0$shop_b;");
        let _ = writeln!(s, "    \"~^(?<shop_b>[0-9])$\" 00$shop_b;");
        let _ = writeln!(s, "}}");
        let _ = writeln!(s, "map ${out_var}_bucket ${out_var} {{");
        let _ = writeln!(s, "    default unrouted;");
        for (b, shard) in self.owners.iter().enumerate() {
            let _ = writeln!(s, "    {b:03} {shard};");
        }
        let _ = writeln!(s, "}}");
        s
    }
}

/// The buckets a spec names (`"5"`, `"10-19,30"`, `"even"`; empty: none), sorted, once each.
pub fn parse_buckets(spec: &str) -> Result<Vec<u16>, String> {
    let mut out = if spec.trim().is_empty() { Vec::new() } else { parse_spec(spec)? };
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Buckets for people, e.g. in a table: `even`, `odd`, `all`, `none`, or the ranges
/// ([`bucket_ranges`]); ranges longer than a column holds are cut after 40 characters, with the
/// count (`"250 buckets: 1,3,5,7,…"`). Scripts get [`bucket_ranges`], which is never cut.
pub fn describe_buckets(sorted: &[u16]) -> String {
    let n = sorted.len();
    let all_step = |start: u16, step: usize| sorted.iter().copied().eq((start..BUCKETS).step_by(step));
    match () {
        _ if n == 0 => "none".to_owned(),
        _ if all_step(0, 1) => "all".to_owned(),
        _ if all_step(0, 2) => "even".to_owned(),
        _ if all_step(1, 2) => "odd".to_owned(),
        _ => {
            let ranges = compress_ranges(sorted);
            if ranges.len() <= 40 {
                return ranges;
            }
            let cut = ranges[..40].rfind(',').unwrap_or(40);
            format!("{n} buckets: {},…", &ranges[..cut])
        }
    }
}

/// Buckets as a spec, never cut: `even`, `odd`, `all`, else the ranges (`"0-2,5"`; empty for none).
/// What `shards status` prints for scripts, and what `shards move` takes back.
pub fn bucket_spec(sorted: &[u16]) -> String {
    match describe_buckets(sorted).as_str() {
        named @ ("even" | "odd" | "all") => named.to_owned(),
        _ => compress_ranges(sorted),
    }
}

/// Buckets as a compact range string (`"0-2,5"`), the form specs take.
pub fn bucket_ranges(sorted: &[u16]) -> String {
    compress_ranges(sorted)
}

fn parse_spec(spec: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    // A shard that owns no bucket yet (one just added): `buckets = ""`.
    if spec.trim().is_empty() {
        return Ok(out);
    }
    for part in spec.split(',').map(str::trim) {
        match part {
            "all" => out.extend(0..BUCKETS),
            "even" => out.extend((0..BUCKETS).step_by(2)),
            "odd" => out.extend((1..BUCKETS).step_by(2)),
            "" => return Err("empty item".into()),
            _ => {
                let (lo, hi) = match part.split_once('-') {
                    Some((lo, hi)) => (parse_bucket(lo)?, parse_bucket(hi)?),
                    None => {
                        let b = parse_bucket(part)?;
                        (b, b)
                    }
                };
                if lo > hi {
                    return Err(format!("range {part} runs backwards"));
                }
                out.extend(lo..=hi);
            }
        }
    }
    Ok(out)
}

fn parse_bucket(s: &str) -> Result<u16, String> {
    let s = s.trim();
    match s.parse::<u16>() {
        Ok(b) if b < BUCKETS && !s.starts_with('+') => Ok(b),
        _ => Err(format!("{s:?} is not a bucket 0-{}", BUCKETS - 1)),
    }
}

/// `[0,1,2,5,7,8]` -> `"0-2,5,7-8"`.
fn compress_ranges(sorted: &[u16]) -> String {
    let mut parts = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn name(s: &str) -> ShardName {
        ShardName::parse(s).unwrap()
    }

    fn even_odd() -> ShardMap {
        let (a, b) = (name("a"), name("b"));
        ShardMap::from_specs([(&a, "even"), (&b, "odd")]).unwrap()
    }

    fn uid(n: u64) -> UserId {
        UserId::new(n).unwrap()
    }

    #[test]
    fn routes_on_the_last_digits_not_the_first() {
        let m = even_odd();
        assert_eq!(m.shard_for(uid(12)).as_str(), "a", "12 is even: the original design got this wrong");
        assert_eq!(m.shard_for(uid(21)).as_str(), "b");
        assert_eq!(m.shard_for(uid(1000)).as_str(), "a");
        assert_eq!(m.shard_for(uid(1001)).as_str(), "b");
        assert_eq!(bucket(uid(123_456)), 456);
        assert_eq!(bucket(uid(crate::ids::MAX_USER_ID)), 991);
    }

    #[test]
    fn ranges_and_lists() {
        let (a, b, c) = (name("a"), name("b"), name("c"));
        let m = ShardMap::from_specs([(&a, "0-499"), (&b, "500-998"), (&c, "999")]).unwrap();
        assert_eq!(m.shard_for(uid(1499)).as_str(), "a");
        assert_eq!(m.shard_for(uid(500)).as_str(), "b");
        assert_eq!(m.shard_for(uid(2999)).as_str(), "c");
        assert_eq!(m.summary()[&a], "0-499");
    }

    #[test]
    fn rejects_gaps_overlaps_and_junk() {
        let (a, b) = (name("a"), name("b"));
        assert_eq!(ShardMap::from_specs([(&a, "0-997")]).unwrap_err(), ShardMapError::Gaps("998-999".into()));
        assert!(matches!(
            ShardMap::from_specs([(&a, "all"), (&b, "7")]).unwrap_err(),
            ShardMapError::Overlap { bucket: 7, .. }
        ));
        for junk in ["", "1000", "5-2", "x", "-1", "1,,2", "+5"] {
            assert!(ShardMap::from_specs([(&a, junk)]).is_err(), "{junk:?} accepted");
        }
    }

    #[test]
    fn buckets_are_described_briefly_for_people() {
        let parse = |spec: &str| parse_buckets(spec).unwrap();
        assert_eq!(describe_buckets(&parse("even")), "even");
        assert_eq!(describe_buckets(&parse("odd")), "odd");
        assert_eq!(describe_buckets(&parse("all")), "all");
        assert_eq!(describe_buckets(&[]), "none");
        assert_eq!(describe_buckets(&parse("0-249,500-749")), "0-249,500-749");
        let odd_half = describe_buckets(&parse("odd")[250..]);
        assert!(odd_half.starts_with("250 buckets: 501,503,") && odd_half.ends_with(",…"), "{odd_half}");
        assert!(odd_half.len() < 60, "{odd_half}");
    }

    #[test]
    fn nginx_map_lists_every_bucket_once() {
        let text = even_odd().render_nginx_map("shop_user_id", "shop_shard");
        assert!(text.contains("    000 a;\n"));
        assert!(text.contains("    999 b;\n"));
        assert!(text.contains("    012 a;\n"));
        let entries = text.lines().filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit())).count();
        assert_eq!(entries, 1000);
    }

    #[test]
    fn a_move_in_stages_admits_each_user_on_exactly_one_shard() {
        let (a, b, c) = (name("a"), name("b"), name("c"));
        let v1 = ShardMap::from_specs([(&a, "even"), (&b, "odd"), (&c, "")]).unwrap();
        let (moving_user, other) = (uid(1012), uid(1014));
        assert_eq!(v1.admit(moving_user, &a), Admission::Serve { writes: true });
        assert_eq!(v1.admit(moving_user, &c), Admission::Elsewhere(a.clone()));

        let mut v2 = v1.next_version();
        v2.set_state(&[12], BucketState::WritesPaused);
        assert_eq!(v2.admit(moving_user, &a), Admission::Serve { writes: false });
        assert_eq!(v2.admit(other, &a), Admission::Serve { writes: true });

        let mut v3 = v2.next_version();
        v3.set_owner(&[12], &c);
        v3.set_state(&[12], BucketState::Moving);
        for shard in [&a, &b, &c] {
            assert_eq!(v3.admit(moving_user, shard), Admission::Moving, "{shard} served a moving bucket");
        }

        let mut v4 = v3.next_version();
        v4.set_state(&[12], BucketState::Serving);
        assert_eq!(v4.admit(moving_user, &c), Admission::Serve { writes: true });
        assert_eq!(v4.admit(moving_user, &a), Admission::Moving, "the old owner must say retry, not serve");
        assert_eq!(v4.admit(moving_user, &b), Admission::Elsewhere(c.clone()));
        assert_eq!(v4.version(), 4);
        assert_eq!(v4.buckets_of(&c), vec![12]);
    }

    #[test]
    fn the_stored_form_reads_back_the_same_map() {
        let (a, b, c) = (name("a"), name("b"), name("c"));
        let mut m = ShardMap::from_specs([(&a, "0-499"), (&b, "500-999"), (&c, "")]).unwrap().next_version();
        m.set_owner(&[3, 4, 700], &c);
        m.set_state(&[3], BucketState::Moving);
        m.set_state(&[600, 601], BucketState::WritesPaused);
        let back = ShardMap::from_json(m.version(), &m.to_json()).unwrap();
        assert_eq!(back, m);
        assert!(m.to_json().contains(r#""c":"3-4,700""#), "{}", m.to_json());
        assert!(ShardMap::from_json(2, r#"{"owners":{"a":"0-998"}}"#).is_err(), "a stored map with a gap");
        assert!(ShardMap::from_json(2, r#"{"owners":{"a":"all"},"surprise":1}"#).is_err());
    }
}
