//! Firmware profiles: what a device model exposes over Modbus, one TOML file per model, and the
//! pure logic around them: validation, merging registers into as few reads as the protocol
//! allows, and decoding raw words into engineering values.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::alarms::{Operator, ThresholdRule, check_rule};
use crate::ids::check_id;

/// Most registers one read (FC 3/4) may return, and most bits (FC 1/2): Modbus application
/// protocol spec, limited by the 256-byte RTU frame.
pub const MAX_READ_REGISTERS: u16 = 125;
pub const MAX_READ_BITS: u16 = 2000;

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("firmware profile {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("firmware profile {path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("firmware profile {path}: `{key}`: {message}")]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    #[default]
    Big,
    Little,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    F32,
    F64,
    Bool,
}

impl DataType {
    /// Registers the value occupies (1 for bool: a coil, or one bit of a register).
    pub fn words(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 | DataType::Bool => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::F64 => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointThreshold {
    pub operator: Operator,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// The alarm options of `[[thresholds]]` (see `alarms::ThresholdRule`), same defaults.
    #[serde(default)]
    pub deadband: f64,
    #[serde(default)]
    pub on_delay_ms: u64,
    #[serde(default)]
    pub off_delay_ms: u64,
    #[serde(default)]
    pub latch: bool,
    pub max_shelve_minutes: Option<u64>,
}

/// One value a device exposes: a register (or several) or a coil.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Point {
    /// The reading's sensorType; unique within the profile.
    pub sensor_type: String,
    /// 1 coils, 2 discrete inputs, 3 holding registers, 4 input registers.
    pub function_code: u8,
    /// Zero-based protocol address (register 40001 is holding register 0).
    pub address: u16,
    #[serde(default = "default_data_type")]
    pub data_type: DataType,
    /// Order of the 16-bit words of a 32/64-bit value; the profile's default if unset.
    pub word_order: Option<Order>,
    /// Order of the two bytes inside each word; the profile's default if unset.
    pub byte_order: Option<Order>,
    /// `bool` from one bit (0 = least significant) of a register.
    pub bit: Option<u8>,
    /// value = raw × scale + offset.
    #[serde(default = "one")]
    pub scale: f64,
    #[serde(default)]
    pub offset: f64,
    #[serde(default)]
    pub unit: String,
    /// Overrides the gateway's `[[thresholds]]` rule for this sensorType on these devices.
    pub threshold: Option<PointThreshold>,
}

fn default_data_type() -> DataType {
    DataType::U16
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub model: String,
    #[serde(default)]
    pub manufacturer: String,
    #[serde(default)]
    pub description: String,
    /// Defaults for every point: `big`/`big` is the Modbus convention (ABCD).
    #[serde(default)]
    pub word_order: Order,
    #[serde(default)]
    pub byte_order: Order,
    pub points: Vec<Point>,
}

/// A profile ready to poll: its points, the reads that cover them and per-point threshold rules.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    pub blocks: Vec<ReadBlock>,
    pub rules: Vec<Option<Arc<ThresholdRule>>>,
}

/// One Modbus read request covering one or more points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBlock {
    pub function_code: u8,
    pub start: u16,
    /// Registers (FC 3/4) or bits (FC 1/2).
    pub count: u16,
    /// (point index, offset of the point's first word or bit in this block).
    pub points: Vec<(usize, u16)>,
}

/// A decoded value of one point.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub point: usize,
    pub value: f64,
}

/// Reads `<dir>/<name>.toml` and validates it.
pub fn load(dir: &Path, name: &str) -> Result<LoadedProfile, ProfileError> {
    let path = dir.join(format!("{name}.toml"));
    let text = std::fs::read_to_string(&path).map_err(|source| ProfileError::Read {
        path: path.clone(),
        source,
    })?;
    parse(&path, &text)
}

/// Parses and validates profile text; errors name the file and the key.
pub fn parse(path: &Path, text: &str) -> Result<LoadedProfile, ProfileError> {
    let profile: Profile = toml::from_str(text).map_err(|e| ProfileError::Syntax {
        path: path.into(),
        message: e.to_string(),
    })?;
    let rules = validate(&profile).map_err(|(key, message)| ProfileError::Invalid {
        path: path.into(),
        key,
        message,
    })?;
    let blocks = plan(&profile.points);
    Ok(LoadedProfile {
        profile,
        blocks,
        rules,
    })
}

/// A problem in one point: the key under `points[i]` and what is wrong with it.
type PointProblem = (&'static str, String);

/// Checks every point, in order, and returns their threshold rules; the first problem comes
/// back as (key, message).
fn validate(profile: &Profile) -> Result<Vec<Option<Arc<ThresholdRule>>>, (String, String)> {
    if profile.points.is_empty() {
        return Err(("points".into(), "lists no points".into()));
    }
    let mut seen = HashSet::new();
    profile
        .points
        .iter()
        .enumerate()
        .map(|(i, p)| {
            check_point(p, &mut seen)
                .and_then(|()| point_rule(p).map_err(|m| ("threshold", m)))
                .map_err(|(key, message)| (format!("points[{i}].{key}"), message))
        })
        .collect()
}

/// One point on its own, plus the uniqueness of its sensorType among the points before it.
fn check_point<'a>(p: &'a Point, seen: &mut HashSet<&'a str>) -> Result<(), PointProblem> {
    check_id(&p.sensor_type).map_err(|e| ("sensor_type", e.to_string()))?;
    if !seen.insert(p.sensor_type.as_str()) {
        return Err(("sensor_type", format!("`{}` appears twice", p.sensor_type)));
    }
    check_function(p)?;
    if u32::from(p.address) + u32::from(p.data_type.words()) > 65_536 {
        return Err(("address", "runs past register 65535".into()));
    }
    if !p.scale.is_finite() || p.scale == 0.0 {
        return Err(("scale", "must be a finite, non-zero number".into()));
    }
    if !p.offset.is_finite() {
        return Err(("offset", "must be finite".into()));
    }
    Ok(())
}

/// The function code, and the data type and bit it allows: bits (FC 1/2) are `bool`, and
/// only a register (FC 3/4) has a `bit` to pick.
fn check_function(p: &Point) -> Result<(), PointProblem> {
    match p.function_code {
        1 | 2 => {
            if p.data_type != DataType::Bool {
                return Err((
                    "data_type",
                    "coils and discrete inputs (function code 1, 2) are `bool`".into(),
                ));
            }
            if p.bit.is_some() {
                return Err(("bit", "only for registers (function code 3, 4)".into()));
            }
        }
        3 | 4 => {
            if let Some(bit) = p.bit {
                if p.data_type != DataType::Bool {
                    return Err(("bit", "needs data_type = \"bool\"".into()));
                }
                if bit > 15 {
                    return Err(("bit", "must be 0-15".into()));
                }
            }
        }
        other => {
            return Err((
                "function_code",
                format!("{other} is not a read function: use 1, 2, 3 or 4"),
            ));
        }
    }
    Ok(())
}

/// The point's own threshold rule, validated, if it has one.
fn point_rule(p: &Point) -> Result<Option<Arc<ThresholdRule>>, String> {
    let Some(t) = &p.threshold else {
        return Ok(None);
    };
    let base = ThresholdRule::new(&p.sensor_type, t.operator, t.warning, t.critical);
    let rule = ThresholdRule {
        unit: p.unit.clone(),
        deadband: t.deadband,
        on_delay_ms: t.on_delay_ms,
        off_delay_ms: t.off_delay_ms,
        latch: t.latch,
        max_shelve_minutes: t.max_shelve_minutes.unwrap_or(base.max_shelve_minutes),
        ..base
    };
    check_rule(&rule).map_err(|(key, m)| match key {
        "" => m,
        key => format!("{key}: {m}"),
    })?;
    Ok(Some(Arc::new(rule)))
}

/// Merges points into as few reads as the protocol allows: per function code, points whose
/// ranges touch or overlap share a read, up to 125 registers or 2000 bits. Gaps are not read
/// across (an unmapped register may answer with an exception).
pub fn plan(points: &[Point]) -> Vec<ReadBlock> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| (points[i].function_code, points[i].address));
    let mut blocks: Vec<ReadBlock> = Vec::new();
    for i in order {
        let p = &points[i];
        let start = u32::from(p.address);
        let end = start + u32::from(p.data_type.words());
        let max = if p.function_code <= 2 {
            MAX_READ_BITS
        } else {
            MAX_READ_REGISTERS
        };
        if let Some(b) = blocks.last_mut() {
            let b_start = u32::from(b.start);
            let b_end = b_start + u32::from(b.count);
            if b.function_code == p.function_code
                && start <= b_end
                && end.max(b_end) - b_start <= u32::from(max)
            {
                b.count = (end.max(b_end) - b_start) as u16;
                b.points.push((i, (start - b_start) as u16));
                continue;
            }
        }
        blocks.push(ReadBlock {
            function_code: p.function_code,
            start: p.address,
            count: p.data_type.words(),
            points: vec![(i, 0)],
        });
    }
    blocks
}

/// Decodes every point of `block` from its raw words (one 0/1 word per bit for FC 1/2).
pub fn decode_block(profile: &Profile, block: &ReadBlock, raw: &[u16]) -> Vec<Decoded> {
    block
        .points
        .iter()
        .filter_map(|&(i, offset)| {
            let p = &profile.points[i];
            let words = raw.get(usize::from(offset)..usize::from(offset + p.data_type.words()))?;
            let value = decode(profile, p, words)?;
            Some(Decoded { point: i, value })
        })
        .collect()
}

/// One point's engineering value, or None when it is not a finite number (e.g. NaN floats
/// some meters report for "no measurement").
pub fn decode(profile: &Profile, p: &Point, words: &[u16]) -> Option<f64> {
    let byte_order = p.byte_order.unwrap_or(profile.byte_order);
    let word_order = p.word_order.unwrap_or(profile.word_order);
    let mut w: Vec<u16> = words
        .iter()
        .map(|&x| match byte_order {
            Order::Big => x,
            Order::Little => x.swap_bytes(),
        })
        .collect();
    if word_order == Order::Little {
        w.reverse();
    }
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_be_bytes()).collect();
    let raw = match p.data_type {
        DataType::U16 => f64::from(w[0]),
        DataType::I16 => f64::from(w[0] as i16),
        DataType::U32 => f64::from(u32::from_be_bytes(bytes[..4].try_into().ok()?)),
        DataType::I32 => f64::from(i32::from_be_bytes(bytes[..4].try_into().ok()?)),
        DataType::F32 => f64::from(f32::from_be_bytes(bytes[..4].try_into().ok()?)),
        DataType::F64 => f64::from_be_bytes(bytes[..8].try_into().ok()?),
        DataType::Bool => {
            let on = match (p.function_code, p.bit) {
                (3 | 4, Some(bit)) => w[0] >> bit & 1 == 1,
                _ => w[0] != 0,
            };
            f64::from(u8::from(on))
        }
    };
    let value = raw * p.scale + p.offset;
    value.is_finite().then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(fc: u8, address: u16, data_type: DataType) -> Point {
        Point {
            sensor_type: format!("p{fc}-{address}"),
            function_code: fc,
            address,
            data_type,
            word_order: None,
            byte_order: None,
            bit: None,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
            threshold: None,
        }
    }

    fn profile(points: Vec<Point>) -> Profile {
        Profile {
            model: "m".into(),
            manufacturer: String::new(),
            description: String::new(),
            word_order: Order::Big,
            byte_order: Order::Big,
            points,
        }
    }

    fn words_of(bytes: &[u8]) -> Vec<u16> {
        bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn integers_signed_scaled() {
        let mut p = point(3, 0, DataType::I16);
        p.scale = 0.1;
        p.offset = -1.0;
        let pr = profile(vec![]);
        assert_eq!(decode(&pr, &p, &[0xFF38]), Some(-21.0)); // -200 * 0.1 - 1
        let p = point(3, 0, DataType::U16);
        assert_eq!(decode(&pr, &p, &[0xFF38]), Some(65336.0));
        let p = point(3, 0, DataType::U32);
        assert_eq!(decode(&pr, &p, &[0x0001, 0x0002]), Some(65538.0));
        let p = point(3, 0, DataType::I32);
        assert_eq!(decode(&pr, &p, &[0xFFFF, 0xFFFE]), Some(-2.0));
    }

    #[test]
    fn float_word_and_byte_orders() {
        let pr = profile(vec![]);
        let be = 230.5f32.to_be_bytes(); // A B C D
        let cases = [
            (Order::Big, Order::Big, [be[0], be[1], be[2], be[3]]), // ABCD
            (Order::Little, Order::Big, [be[2], be[3], be[0], be[1]]), // CDAB
            (Order::Big, Order::Little, [be[1], be[0], be[3], be[2]]), // BADC
            (Order::Little, Order::Little, [be[3], be[2], be[1], be[0]]), // DCBA
        ];
        for (word, byte, wire) in cases {
            let mut p = point(4, 0, DataType::F32);
            p.word_order = Some(word);
            p.byte_order = Some(byte);
            assert_eq!(
                decode(&pr, &p, &words_of(&wire)),
                Some(230.5),
                "{word:?}/{byte:?}"
            );
        }
        let x = 12345.678901234f64;
        let be = x.to_be_bytes();
        let p = point(3, 0, DataType::F64);
        assert_eq!(decode(&pr, &p, &words_of(&be)), Some(x));
        let mut p = point(3, 0, DataType::F64);
        p.word_order = Some(Order::Little);
        let mut wire = words_of(&be);
        wire.reverse();
        assert_eq!(decode(&pr, &p, &wire), Some(x));
        // Profile-wide default applies when the point sets none.
        let mut pr = profile(vec![]);
        pr.word_order = Order::Little;
        let p = point(3, 0, DataType::F32);
        let be = 1.5f32.to_be_bytes();
        assert_eq!(
            decode(&pr, &p, &words_of(&[be[2], be[3], be[0], be[1]])),
            Some(1.5)
        );
    }

    #[test]
    fn nan_is_no_value_and_bools() {
        let pr = profile(vec![]);
        let p = point(3, 0, DataType::F32);
        assert_eq!(decode(&pr, &p, &words_of(&f32::NAN.to_be_bytes())), None);
        let mut p = point(3, 0, DataType::Bool);
        p.bit = Some(3);
        assert_eq!(decode(&pr, &p, &[0b1000]), Some(1.0));
        assert_eq!(decode(&pr, &p, &[0b0111]), Some(0.0));
        let p = point(1, 0, DataType::Bool);
        assert_eq!(decode(&pr, &p, &[1]), Some(1.0));
    }

    #[test]
    fn contiguous_points_merge_per_function_code() {
        let points = vec![
            point(3, 10, DataType::F32), // 10-11
            point(3, 0, DataType::U16),  // 0
            point(3, 1, DataType::U16),  // 1
            point(3, 2, DataType::U32),  // 2-3
            point(4, 2, DataType::U16),  // other function code
            point(3, 12, DataType::U16), // 12, touches 10-11
            point(1, 0, DataType::Bool),
            point(1, 1, DataType::Bool),
            point(1, 5, DataType::Bool), // gap: own read
        ];
        let blocks = plan(&points);
        let summary: Vec<(u8, u16, u16)> = blocks
            .iter()
            .map(|b| (b.function_code, b.start, b.count))
            .collect();
        assert_eq!(
            summary,
            vec![(1, 0, 2), (1, 5, 1), (3, 0, 4), (3, 10, 3), (4, 2, 1)]
        );
        assert_eq!(blocks[2].points, vec![(1, 0), (2, 1), (3, 2)]);
        assert_eq!(blocks[3].points, vec![(0, 0), (5, 2)]);
    }

    #[test]
    fn overlapping_bits_share_a_read_and_reads_are_capped() {
        let mut a = point(3, 7, DataType::Bool);
        a.bit = Some(0);
        let mut b = point(3, 7, DataType::Bool);
        b.bit = Some(1);
        b.sensor_type = "b".into();
        assert_eq!(plan(&[a, b]).len(), 1);

        let many: Vec<Point> = (0..200).map(|i| point(4, i, DataType::U16)).collect();
        let blocks = plan(&many);
        assert_eq!(
            blocks.iter().map(|b| b.count).collect::<Vec<_>>(),
            vec![125, 75]
        );
        let f64s: Vec<Point> = (0..40).map(|i| point(3, i * 4, DataType::F64)).collect();
        assert!(
            plan(&f64s)
                .iter()
                .all(|b| b.count <= MAX_READ_REGISTERS && b.count % 4 == 0)
        );
    }

    #[test]
    fn decode_block_uses_offsets() {
        let points = vec![point(3, 0, DataType::U16), point(3, 1, DataType::U32)];
        let pr = profile(points);
        let blocks = plan(&pr.points);
        let out = decode_block(&pr, &blocks[0], &[7, 0, 9]);
        assert_eq!(
            out,
            vec![
                Decoded {
                    point: 0,
                    value: 7.0
                },
                Decoded {
                    point: 1,
                    value: 9.0
                }
            ]
        );
    }

    #[test]
    fn validation_names_file_and_key() {
        let path = Path::new("/p/x.toml");
        let err = |text: &str| parse(path, text).unwrap_err().to_string();
        let e =
            err("model = \"m\"\n[[points]]\nsensor_type = \"t\"\nfunction_code = 6\naddress = 0\n");
        assert!(
            e.contains("/p/x.toml") && e.contains("points[0].function_code"),
            "{e}"
        );
        let e = err(
            "model = \"m\"\n[[points]]\nsensor_type = \"t\"\nfunction_code = 1\naddress = 0\ndata_type = \"f32\"\n",
        );
        assert!(e.contains("points[0].data_type"), "{e}");
        let e = err(
            "model = \"m\"\n[[points]]\nsensor_type = \"t\"\nfunction_code = 3\naddress = 0\ndata_type = \"f16\"\n",
        );
        assert!(
            e.contains("/p/x.toml") && e.contains("data_type") && e.contains("line 6"),
            "{e}"
        );
        let e = err(
            "model = \"m\"\n[[points]]\nsensor_type = \"t\"\nfunction_code = 3\naddress = 0\n[[points]]\nsensor_type = \"t\"\nfunction_code = 3\naddress = 1\n",
        );
        assert!(e.contains("points[1].sensor_type"), "{e}");
        let e = err(
            "model = \"m\"\n[[points]]\nsensor_type = \"t\"\nfunction_code = 3\naddress = 0\n[points.threshold]\noperator = \">\"\nwarning = 5.0\ncritical = 1.0\n",
        );
        assert!(
            e.contains("points[0].threshold") && e.contains("out of order"),
            "{e}"
        );
    }

    #[test]
    fn shipped_profiles_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("firmware-profiles");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let name = path.file_stem().unwrap().to_str().unwrap();
                let p = load(&dir, name).unwrap_or_else(|e| panic!("{e}"));
                assert!(!p.blocks.is_empty());
                n += 1;
            }
        }
        assert!(n >= 3, "ship at least three profiles");
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    const TYPES: &[&str] = &["u16", "i16", "u32", "i32", "f32", "f64", "bool", "u8"];
    const OPERATORS: &[&str] = &[">", ">=", "<", "<=", "=="];

    /// A number: mostly an ordinary one, sometimes any f64 (NaN, infinities, zero, subnormal).
    fn number() -> impl Strategy<Value = f64> {
        prop_oneof![8 => -1e6..1e6f64, 2 => any::<f64>()]
    }

    /// One `[[points]]` table, mostly valid, with every key sometimes drawn from invalid values.
    fn point() -> impl Strategy<Value = toml::Table> {
        let threshold = prop::option::weighted(
            0.3,
            (
                prop::sample::select(OPERATORS),
                prop::option::of(number()),
                prop::option::of(number()),
            ),
        );
        let function = prop_oneof![
            6 => (3..=4u8, prop::sample::select(&TYPES[..7])),
            3 => (1..=2u8, Just("bool")),
            1 => (0..7u8, prop::sample::select(TYPES)),
        ];
        (
            prop_oneof![9 => "[a-z]{1,4}_[0-9]{1,4}", 1 => "\\PC{0,70}"],
            function,
            prop_oneof![8 => 0..200u16, 2 => any::<u16>()],
            prop::option::weighted(0.1, 0..20u8),
            number(),
            number(),
            threshold,
        )
            .prop_map(
                |(name, (fc, data_type), address, bit, scale, offset, threshold)| {
                    let mut t = toml::Table::new();
                    t.insert("sensor_type".into(), name.into());
                    t.insert("function_code".into(), i64::from(fc).into());
                    t.insert("address".into(), i64::from(address).into());
                    t.insert("data_type".into(), data_type.into());
                    if let Some(bit) = bit {
                        t.insert("bit".into(), i64::from(bit).into());
                    }
                    t.insert("scale".into(), scale.into());
                    t.insert("offset".into(), offset.into());
                    if let Some((op, warning, critical)) = threshold {
                        let mut th = toml::Table::new();
                        th.insert("operator".into(), op.into());
                        warning.map(|w| th.insert("warning".into(), w.into()));
                        critical.map(|c| th.insert("critical".into(), c.into()));
                        t.insert("threshold".into(), th.into());
                    }
                    t
                },
            )
    }

    fn profile_text() -> impl Strategy<Value = String> {
        (
            prop::collection::vec(point(), 0..10),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(points, little_words, little_bytes)| {
                let order = |little: bool| if little { "little" } else { "big" };
                let mut t = toml::Table::new();
                t.insert("model".into(), "m".into());
                t.insert("word_order".into(), order(little_words).into());
                t.insert("byte_order".into(), order(little_bytes).into());
                let points = points.into_iter().map(toml::Value::Table).collect();
                t.insert("points".into(), toml::Value::Array(points));
                toml::to_string(&t).expect("a table serializes")
            })
    }

    proptest! {
        #[test]
        fn any_text_never_panics(text in "\\PC{0,400}") {
            let _ = parse(Path::new("p.toml"), &text);
        }

        /// A profile that validates plans reads within protocol limits that cover every point
        /// once, and decodes any register contents to finite values or nothing.
        #[test]
        fn valid_profiles_plan_and_decode(text in profile_text(), raw in prop::collection::vec(any::<u16>(), 2000)) {
            let Ok(loaded) = parse(Path::new("p.toml"), &text) else {
                return Ok(());
            };
            let mut covered = vec![0; loaded.profile.points.len()];
            for block in &loaded.blocks {
                let max = if block.function_code <= 2 { MAX_READ_BITS } else { MAX_READ_REGISTERS };
                prop_assert!(block.count >= 1 && block.count <= max);
                prop_assert!(u32::from(block.start) + u32::from(block.count) <= 65_536);
                for &(i, offset) in &block.points {
                    covered[i] += 1;
                    let words = loaded.profile.points[i].data_type.words();
                    prop_assert!(offset + words <= block.count);
                }
                for d in decode_block(&loaded.profile, block, &raw[..usize::from(block.count)]) {
                    prop_assert!(d.value.is_finite());
                }
            }
            prop_assert!(covered.iter().all(|&n| n == 1));
        }
    }
}
