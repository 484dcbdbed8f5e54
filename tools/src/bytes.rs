//! Keys and values on a command line: arguments in (as they are, or hex), bytes out (escaped,
//! or hex), so that any byte string survives the round trip through a terminal or a script.
//!
//! Owns: the escaping rule (tikv-ctl's: printable ASCII as it is, `\\`, `\t`, `\n`, `\r`, and
//! `\xNN` for every other byte), and `--hex`. Must not: know about the cluster.

use anyhow::{Context, Result};

/// How keys and values are written on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Encoding {
    /// Hex both ways.
    pub hex: bool,
}

impl Encoding {
    /// `bytes` as printed: hex, or escaped.
    pub fn show(&self, bytes: &[u8]) -> String {
        if self.hex {
            hex::encode(bytes)
        } else {
            escape(bytes)
        }
    }
}

/// An argument as bytes: hex-decoded with `--hex`, else its own bytes.
pub fn decode_arg(arg: &str, enc: Encoding) -> Result<Vec<u8>> {
    if enc.hex {
        return hex::decode(arg).with_context(|| format!("`{arg}` is not hex (--hex)"));
    }
    Ok(arg.as_bytes().to_vec())
}

/// Printable ASCII as it is; backslash, tab, newline and carriage return as `\\`, `\t`, `\n`,
/// `\r`; every other byte as `\xNN`. Never contains a raw tab or newline.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves escaping keeps printable text, never emits a raw separator, and that every byte
    // has one spelling (so distinct keys print distinctly).
    #[test]
    fn escaping_is_printable_and_unambiguous() {
        assert_eq!(escape(b"user:1"), "user:1");
        assert_eq!(escape(b"a\tb\nc\\d\x00\xff"), "a\\tb\\nc\\\\d\\x00\\xff");
        let all: Vec<String> = (0..=255u8).map(|b| escape(&[b])).collect();
        assert!(all.iter().all(|s| !s.contains('\t') && !s.contains('\n')));
        let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), 256);
    }

    // Proves --hex decodes arguments and prints bytes as hex, and refuses what is not hex.
    #[test]
    fn hex_both_ways() {
        let hex = Encoding { hex: true };
        assert_eq!(decode_arg("00ff41", hex).unwrap(), vec![0, 0xff, b'A']);
        assert_eq!(hex.show(&[0, 0xff, b'A']), "00ff41");
        assert!(decode_arg("xyz", hex).is_err());
        assert_eq!(decode_arg("xyz", Encoding::default()).unwrap(), b"xyz");
    }
}
