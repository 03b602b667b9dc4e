//! A lane's relay as the config gives it (`[lanes.NAME.relay]`): keys, defaults and ranges,
//! checked without touching hardware.

use std::time::Duration;

use gpiocdev::line::Offset;
use serde::Deserialize;

use super::drive::DriveTiming;
use super::line::LineRef;
use crate::relay::RelayError;

pub(super) const PULSE_MS: std::ops::RangeInclusive<u64> = 20..=5_000;
const GAP_MS: std::ops::RangeInclusive<u64> = 20..=2_000;
const HOLD_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 500..=60_000;

/// How a relay opens the gate for one paid passenger.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum RelayMode {
    /// Drive the line active for `pulse_ms`, then inactive. For gate controllers that take a
    /// "one passage" pulse on a dry contact and run the barrier themselves (most turnstiles
    /// and flap gates).
    #[default]
    Pulse,
    /// Hold the line active until the lane's passage sensor reports a passage, or
    /// `hold_timeout_ms` passes. For barriers that stay open as long as the contact is closed.
    HoldUntilPassage,
}

fn default_pulse_ms() -> u64 {
    300
}
fn default_gap_ms() -> u64 {
    200
}
fn default_hold_timeout_ms() -> u64 {
    8_000
}

/// One lane's barrier relay, as the lane config gives it (`[lanes.NAME.relay]`).
///
/// ```toml
/// line = "GATE1_RELAY"      # or: chip = "gpiochip0", offset = 17
/// active_low = true          # relay boards that energise on a low pin
/// mode = "pulse"             # or "hold_until_passage"
/// pulse_ms = 300
/// ```
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpioRelaySpec {
    /// The line's name as the device tree labels it (`gpio-line-names`, shown by `gpioinfo`).
    /// Searched on every chip unless `chip` is also set. Leave out when using `offset`.
    #[serde(default)]
    pub line: Option<String>,
    /// The chip: `gpiochip0` or a path such as `/dev/gpiochip0`.
    #[serde(default)]
    pub chip: Option<String>,
    /// The line's offset on `chip`, for boards whose device tree does not name the line.
    #[serde(default)]
    pub offset: Option<Offset>,
    /// The relay energises when the pin is low (most opto-isolated relay boards). The gate is
    /// "open" when the line is active, whatever the electrical level.
    #[serde(default)]
    pub active_low: bool,
    /// How one paid passenger opens the gate.
    #[serde(default)]
    pub mode: RelayMode,
    /// Pulse length in `pulse` mode, milliseconds (20..=5000; default 300). Match the gate
    /// controller's minimum input pulse.
    #[serde(default = "default_pulse_ms")]
    pub pulse_ms: u64,
    /// Minimum time the line stays inactive between two opens, milliseconds (20..=2000;
    /// default 200), so a controller that counts pulses sees two passengers, not one long pulse.
    #[serde(default = "default_gap_ms")]
    pub gap_ms: u64,
    /// In `hold_until_passage` mode, how long the gate stays open when nobody passes,
    /// milliseconds (500..=60000; default 8000).
    #[serde(default = "default_hold_timeout_ms")]
    pub hold_timeout_ms: u64,
}

impl GpioRelaySpec {
    /// A pulse-mode spec for the line named `name`, other keys at their defaults.
    pub fn named(name: &str) -> Self {
        GpioRelaySpec {
            line: Some(name.to_string()),
            chip: None,
            offset: None,
            active_low: false,
            mode: RelayMode::Pulse,
            pulse_ms: default_pulse_ms(),
            gap_ms: default_gap_ms(),
            hold_timeout_ms: default_hold_timeout_ms(),
        }
    }

    /// Where the line is, from `line`, `chip` and `offset`.
    pub fn line_ref(&self) -> Result<LineRef, RelayError> {
        LineRef::from_keys(self.line.as_deref(), self.chip.as_deref(), self.offset)
    }

    /// Checks the keys without touching hardware (for `check-config`).
    pub fn validate(&self) -> Result<(), RelayError> {
        self.line_ref()?;
        in_range("pulse_ms", self.pulse_ms, PULSE_MS)?;
        in_range("gap_ms", self.gap_ms, GAP_MS)?;
        in_range("hold_timeout_ms", self.hold_timeout_ms, HOLD_TIMEOUT_MS)?;
        Ok(())
    }

    /// The timings this spec asks for.
    pub fn timing(&self) -> DriveTiming {
        DriveTiming {
            mode: self.mode,
            pulse: Duration::from_millis(self.pulse_ms),
            gap: Duration::from_millis(self.gap_ms),
            hold_timeout: Duration::from_millis(self.hold_timeout_ms),
        }
    }
}

pub(super) fn in_range(
    key: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<(), RelayError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(RelayError::Config(format!(
            "{key} = {value} is outside {}..={}",
            range.start(),
            range.end()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn spec_parses_strictly_with_defaults() {
        let spec: GpioRelaySpec =
            toml::from_str("line = \"GATE1\"\nactive_low = true\n").expect("parses");
        assert_eq!(spec.pulse_ms, 300);
        assert_eq!(spec.mode, RelayMode::Pulse);
        assert!(spec.active_low);
        assert!(spec.validate().is_ok());
        let err = toml::from_str::<GpioRelaySpec>("line = \"GATE1\"\npulse = 300\n")
            .expect_err("unknown key");
        assert!(err.to_string().contains("unknown field"), "{err}");
        let spec: GpioRelaySpec =
            toml::from_str("chip = \"gpiochip2\"\noffset = 17\nmode = \"hold_until_passage\"\n")
                .expect("parses");
        assert_eq!(
            spec.line_ref().expect("valid"),
            LineRef::Offset {
                chip: PathBuf::from("/dev/gpiochip2"),
                offset: 17
            }
        );
        assert_eq!(spec.mode, RelayMode::HoldUntilPassage);
    }

    #[test]
    fn spec_rejects_incomplete_or_out_of_range_keys() {
        let mut spec = GpioRelaySpec::named("GATE1");
        spec.offset = Some(3);
        assert!(matches!(spec.validate(), Err(RelayError::Config(_))));
        spec.line = None;
        assert!(matches!(spec.validate(), Err(RelayError::Config(_))));
        spec.chip = Some("/dev/gpiochip0".into());
        assert!(spec.validate().is_ok());
        spec.pulse_ms = 5;
        let err = spec.validate().expect_err("too short");
        assert!(err.is_config());
        assert!(err.to_string().contains("pulse_ms"), "{err}");
    }
}
