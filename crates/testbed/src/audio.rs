//! The sound SIPp phones send once a call is answered, so that recordings
//! hold real audio: a 440 Hz tone, G.711 μ-law in a WAV file.

use std::f64::consts::PI;

const RATE: u32 = 8000;

/// WAV (format 7, μ-law, 8 kHz mono) with `seconds` of a 440 Hz tone at about -12 dBFS.
pub(crate) fn tone_wav(seconds: u32) -> Vec<u8> {
    let samples: Vec<u8> = (0..RATE * seconds)
        .map(|n| {
            let t = f64::from(n) / f64::from(RATE);
            let value = (8000.0 * (2.0 * PI * 440.0 * t).sin()) as i16;
            linear_to_ulaw(value)
        })
        .collect();
    let data_len = samples.len() as u32;
    let mut wav = Vec::with_capacity(58 + samples.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(50 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVE");
    wav.extend_from_slice(b"fmt ");
    wav.extend_from_slice(&18u32.to_le_bytes());
    wav.extend_from_slice(&7u16.to_le_bytes()); // WAVE_FORMAT_MULAW
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&RATE.to_le_bytes());
    wav.extend_from_slice(&RATE.to_le_bytes()); // bytes per second
    wav.extend_from_slice(&1u16.to_le_bytes()); // block align
    wav.extend_from_slice(&8u16.to_le_bytes()); // bits per sample
    wav.extend_from_slice(&0u16.to_le_bytes()); // no extension
    wav.extend_from_slice(b"fact");
    wav.extend_from_slice(&4u32.to_le_bytes());
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.extend_from_slice(&samples);
    wav
}

/// G.711 μ-law encoding of one 16-bit sample.
fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    const CLIP: i32 = 32635;
    let mut value = i32::from(sample);
    let sign = if value < 0 {
        value = -value;
        0x80
    } else {
        0
    };
    value = value.min(CLIP) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && value & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (value >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulaw_matches_g711_reference_points() {
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(linear_to_ulaw(-1), 0x7f);
        assert_eq!(linear_to_ulaw(32767), 0x80);
        assert_eq!(linear_to_ulaw(-32768), 0x00);
    }

    #[test]
    fn wav_header_describes_the_data() {
        let wav = tone_wav(1);
        assert_eq!(&wav[0..4], b"RIFF");
        assert_eq!(u16::from_le_bytes([wav[20], wav[21]]), 7);
        assert_eq!(wav.len(), 58 + 8000);
    }
}
