//! A synthesized voice-like signal, distinct per speaker: a glottal-ish harmonic series
//! with vibrato, shaped by a syllable-rate envelope, with pauses between phrases.
//! Shared by the `room` example, the tests and the benchmarks (included with `#[path]`).
#![allow(dead_code)]

use std::f32::consts::TAU;

/// One speaker's signal generator (48 kHz mono).
pub struct Voice {
    f0: f32,
    syllable_hz: f32,
    phrase_s: f32,
    pause_s: f32,
    phase: f32,
    t: f32,
}

impl Voice {
    /// Speaker `index` (0, 1, 2, ...): each gets its own pitch, pace and phrasing.
    pub fn new(index: usize) -> Voice {
        let i = index as f32;
        Voice {
            f0: 95.0 + 23.0 * (i % 7.0) + 3.0 * i,
            syllable_hz: 3.5 + 0.4 * (i % 5.0),
            phrase_s: 1.6 + 0.35 * (i % 4.0),
            pause_s: 0.5 + 0.2 * (i % 3.0),
            phase: 0.0,
            t: 0.37 * i,
        }
    }

    /// Whether the speaker is mid-phrase at its current time.
    pub fn speaking(&self) -> bool {
        self.t % (self.phrase_s + self.pause_s) < self.phrase_s
    }

    /// Fills `out` with the next samples.
    pub fn fill(&mut self, out: &mut [i16]) {
        const DT: f32 = 1.0 / 48_000.0;
        for s in out.iter_mut() {
            let cycle = self.phrase_s + self.pause_s;
            let in_phrase = self.t % cycle;
            let gate = if in_phrase < self.phrase_s {
                // Soft phrase edges, syllables as a raised cosine.
                let edge = (in_phrase / 0.05)
                    .min((self.phrase_s - in_phrase) / 0.05)
                    .min(1.0);
                let syll = 0.5 - 0.5 * (TAU * self.syllable_hz * in_phrase).cos();
                edge * (0.25 + 0.75 * syll)
            } else {
                0.0
            };
            let vibrato = 1.0 + 0.02 * (TAU * 5.5 * self.t).sin();
            let f = self.f0 * vibrato;
            self.phase = (self.phase + TAU * f * DT) % TAU;
            let mut v = 0.0;
            for k in 1..=12 {
                let kf = k as f32;
                // Formant-like emphasis around 500 Hz and 1.5 kHz.
                let hz = kf * f;
                let formant = 1.0
                    + 2.0 * (-((hz - 500.0) / 250.0).powi(2)).exp()
                    + 1.2 * (-((hz - 1500.0) / 400.0).powi(2)).exp();
                v += formant * (kf * self.phase).sin() / kf;
            }
            *s = (v * gate * 4_000.0).clamp(-32_000.0, 32_000.0) as i16;
            self.t += DT;
        }
    }
}
