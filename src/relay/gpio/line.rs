//! Finding a GPIO line (by name on any chip, by name on one chip, or by chip and offset),
//! checking that nobody else holds it, and requesting it as an output.

use std::path::PathBuf;

use gpiocdev::chip::Chip;
use gpiocdev::line::{Offset, Value};
use gpiocdev::request::{Config, Request};

use crate::relay::RelayError;

/// The consumer label on every line tapgate requests, so `gpioinfo` shows who owns it.
pub const CONSUMER: &str = "tapgate";

/// Where a line is: by the name the device tree gives it, or by chip and offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineRef {
    /// A line found by name (`gpio-line-names`), on `chip` if given, else on any chip; the name
    /// must then be unique across chips.
    Named {
        /// The line name, e.g. `GATE1_RELAY`.
        name: String,
        /// Restrict the search to this chip.
        chip: Option<PathBuf>,
    },
    /// A line by chip and offset.
    Offset {
        /// The chip's character device, e.g. `/dev/gpiochip0`.
        chip: PathBuf,
        /// The line's offset on the chip.
        offset: Offset,
    },
}

impl LineRef {
    /// Builds a line reference from the config keys `line`, `chip` and `offset`: either a name
    /// (optionally with a chip), or a chip and an offset.
    pub fn from_keys(
        line: Option<&str>,
        chip: Option<&str>,
        offset: Option<Offset>,
    ) -> Result<Self, RelayError> {
        let chip = chip.map(chip_path);
        match (line, chip, offset) {
            (Some(name), chip, None) if !name.is_empty() => Ok(LineRef::Named {
                name: name.to_string(),
                chip,
            }),
            (None, Some(chip), Some(offset)) => Ok(LineRef::Offset { chip, offset }),
            (Some(_), _, Some(_)) => Err(RelayError::Config(
                "give either `line` (a name) or `chip` + `offset`, not both".into(),
            )),
            (None, None, Some(_)) => Err(RelayError::Config(
                "`offset` needs `chip` (e.g. chip = \"gpiochip0\")".into(),
            )),
            _ => Err(RelayError::Config(
                "no line: set `line` to the line's name, or `chip` and `offset`".into(),
            )),
        }
    }
}

/// `gpiochip0` means `/dev/gpiochip0`; anything with a slash is taken as a path.
fn chip_path(chip: &str) -> PathBuf {
    if chip.contains('/') {
        PathBuf::from(chip)
    } else {
        PathBuf::from("/dev").join(chip)
    }
}

/// A line found on the system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedLine {
    /// The chip's character device.
    pub chip: PathBuf,
    /// The offset on that chip.
    pub offset: Offset,
    /// The line's name (empty when the device tree gives none).
    pub name: String,
}

impl std::fmt::Display for ResolvedLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let chip = self
            .chip
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.chip.display().to_string());
        if self.name.is_empty() {
            write!(f, "{chip}:{}", self.offset)
        } else {
            write!(f, "{chip}:{} ({})", self.offset, self.name)
        }
    }
}

/// Maps a `gpiocdev` failure to what the caller should do about it.
pub(crate) fn gpio_error(what: &str, err: gpiocdev::Error) -> RelayError {
    match &err {
        gpiocdev::Error::Os(errno) if errno.0 == libc::EACCES || errno.0 == libc::EPERM => {
            RelayError::Permission(what.to_string())
        }
        gpiocdev::Error::Os(errno) if errno.0 == libc::ENOENT => {
            RelayError::Config(format!("{what}: no such GPIO chip"))
        }
        gpiocdev::Error::GpioChip(..) | gpiocdev::Error::NonuniqueLineName(_) => {
            RelayError::Config(format!("{what}: {err}"))
        }
        _ => RelayError::Io(format!("{what}: {err}")),
    }
}

/// Finds the chip and offset of a line, and checks that it exists.
pub fn resolve(line: &LineRef) -> Result<ResolvedLine, RelayError> {
    match line {
        LineRef::Named { name, chip: None } => {
            let names = [name.as_str()];
            let found = gpiocdev::find_named_lines(&names, true).map_err(|e| match e {
                gpiocdev::Error::NonuniqueLineName(_) => RelayError::Config(format!(
                    "line name {name:?} is on more than one chip; add `chip`"
                )),
                e => gpio_error("listing GPIO lines", e),
            })?;
            let found = found.get(name.as_str()).ok_or_else(|| {
                RelayError::Config(format!(
                    "no GPIO line named {name:?} on any chip this user can open"
                ))
            })?;
            Ok(ResolvedLine {
                chip: found.chip.clone(),
                offset: found.info.offset,
                name: name.clone(),
            })
        }
        LineRef::Named {
            name,
            chip: Some(chip),
        } => {
            let c = open_chip(chip)?;
            let info = c.find_line_info(name).ok_or_else(|| {
                RelayError::Config(format!("no line named {name:?} on {}", chip.display()))
            })?;
            Ok(ResolvedLine {
                chip: chip.clone(),
                offset: info.offset,
                name: name.clone(),
            })
        }
        LineRef::Offset { chip, offset } => {
            let c = open_chip(chip)?;
            let info = c.line_info(*offset).map_err(|e| match e {
                gpiocdev::Error::Uapi(..) => {
                    RelayError::Config(format!("{} has no line at offset {offset}", chip.display()))
                }
                e => gpio_error(&chip.display().to_string(), e),
            })?;
            Ok(ResolvedLine {
                chip: chip.clone(),
                offset: *offset,
                name: info.name,
            })
        }
    }
}

fn open_chip(chip: &std::path::Path) -> Result<Chip, RelayError> {
    Chip::from_path(chip).map_err(|e| gpio_error(&chip.display().to_string(), e))
}

/// Fails with [`RelayError::Busy`] when another consumer already holds the line, so the
/// technician reads "in use by tapgate" instead of a bare EBUSY.
pub(crate) fn check_free(line: &ResolvedLine) -> Result<(), RelayError> {
    let chip = open_chip(&line.chip)?;
    let info = chip
        .line_info(line.offset)
        .map_err(|e| gpio_error(&line.to_string(), e))?;
    if info.used {
        return Err(RelayError::Busy {
            line: line.to_string(),
            consumer: info.consumer,
        });
    }
    Ok(())
}

pub(super) fn output_config(
    chip: &std::path::Path,
    offset: Offset,
    active_low: bool,
    value: Value,
) -> Config {
    let mut cfg = Config::default();
    cfg.on_chip(chip).with_line(offset).as_output(value);
    if active_low {
        cfg.as_active_low();
    } else {
        cfg.as_active_high();
    }
    cfg
}

pub(super) fn request_output(line: &ResolvedLine, active_low: bool) -> Result<Request, RelayError> {
    check_free(line)?;
    let cfg = output_config(&line.chip, line.offset, active_low, Value::Inactive);
    Request::from_config(cfg)
        .with_consumer(CONSUMER)
        .request()
        .map_err(|e| gpio_error(&format!("requesting {line}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_chip_offset_and_name() {
        let l = ResolvedLine {
            chip: PathBuf::from("/dev/gpiochip0"),
            offset: 17,
            name: "GATE1".into(),
        };
        assert_eq!(l.to_string(), "gpiochip0:17 (GATE1)");
    }
}
