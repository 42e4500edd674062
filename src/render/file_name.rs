//! From the file name a phone requests to the phone and the format, for the provisioning
//! server. Only the two shapes of [`Format::file_name`] are accepted; everything else
//! (other files, paths, `..`) is refused before any lookup.

use super::Format;
use crate::core::Mac;

/// Why a requested file name is not a phone's configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileNameError {
    #[error(
        "'{0}' is not a phone configuration file: expected cfg<mac>.xml or <mac>.cfg with 12 hex digits"
    )]
    Unknown(String),
}

/// The MAC and format of a requested file name, e.g. `cfg000b82123456.xml` → (00:0b:82:12:34:56,
/// XML). The hex digits may be upper or lower case, as some firmwares upper-case the MAC.
pub fn parse_file_name(name: &str) -> Result<(Mac, Format), FileNameError> {
    let unknown = || FileNameError::Unknown(name.to_owned());
    let (hex, format) = if let Some(hex) = name
        .strip_prefix("cfg")
        .and_then(|r| r.strip_suffix(".xml"))
    {
        (hex, Format::Xml)
    } else if let Some(hex) = name.strip_suffix(".cfg") {
        (hex, Format::Yealink)
    } else {
        return Err(unknown());
    };
    // Mac also accepts separators; file names never carry them.
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let mac: Mac = hex.parse().map_err(|_| unknown())?;
    Ok((mac, format))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac() -> Mac {
        "00:0b:82:12:34:56".parse().expect("valid MAC")
    }

    #[test]
    fn each_format_round_trips_through_its_file_name() {
        for format in Format::ALL {
            let name = format.file_name(mac());
            assert_eq!(parse_file_name(&name), Ok((mac(), format)), "{name}");
        }
    }

    #[test]
    fn file_names_are_lower_case_and_bare() {
        let mac: Mac = "00-0B-82-AB-CD-EF".parse().expect("valid MAC");
        assert_eq!(Format::Xml.file_name(mac), "cfg000b82abcdef.xml");
        assert_eq!(Format::Yealink.file_name(mac), "000b82abcdef.cfg");
    }

    #[test]
    fn upper_case_hex_is_the_same_phone() {
        assert_eq!(
            parse_file_name("cfg000B82123456.xml"),
            Ok((mac(), Format::Xml))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for name in [
            "",
            "cfg",
            "cfg.xml",
            ".cfg",
            "cfg000b8212345.xml",
            "cfg000b821234567",
            "cfg00:0b:82:12:34:56.xml",
            "00-0b-82-12-34-56.cfg",
            "../000b82123456.cfg",
            "cfg000b82123456.xml/..",
            "firmware/site/cfg000b82123456",
            "cfg000b8212345g",
            "y000000000028.cfg",
            "000b82123456.xml",
            "cfg000b82123456.cfg",
            "CFG000b82123456",
            // Grandstream's cfg<mac> is its binary format: never served as text.
            "cfg000b82123456",
        ] {
            assert!(parse_file_name(name).is_err(), "{name:?} should be refused");
        }
    }
}
