//! A small RGB8 raster canvas with a built-in 3x5 pixel font and PNG encoding.
//!
//! Used by [`crate::render`] (pictures of ARC tasks, pixel-exact grids); the `recursa plot`
//! command draws with plotters and encodes its picture through [`Canvas::from_pixels`].
//! Everything is clipped to the canvas: drawing partly or wholly outside it is not an error.
//!
//! The font has digits, upper-case letters (lower case is drawn upper case) and
//! `. , : # - _ / = ( ) > < | + %`; other characters are drawn as `?`. A character is
//! 3x5 font pixels plus one pixel of spacing, each font pixel a `scale` x `scale` square:
//! [`text_width`] gives the width of a string.

/// An RGB8 image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canvas {
    width: usize,
    height: usize,
    px: Vec<u8>,
}

impl Canvas {
    /// A `width` x `height` canvas filled with `background`.
    pub fn new(width: usize, height: usize, background: [u8; 3]) -> Canvas {
        let mut px = vec![0u8; width * height * 3];
        for p in px.chunks_exact_mut(3) {
            p.copy_from_slice(&background);
        }
        Canvas { width, height, px }
    }

    /// A canvas of the row-major RGB8 `pixels` (drawn elsewhere), or `None` when they are
    /// not `width` x `height` x 3 bytes.
    pub fn from_pixels(width: usize, height: usize, pixels: Vec<u8>) -> Option<Canvas> {
        (pixels.len() == width * height * 3).then_some(Canvas {
            width,
            height,
            px: pixels,
        })
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, row-major RGB8.
    pub fn pixels(&self) -> &[u8] {
        &self.px
    }

    /// The colour at (x, y), or `None` outside the canvas.
    pub fn get(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        (x < self.width && y < self.height).then(|| {
            let i = (y * self.width + x) * 3;
            [self.px[i], self.px[i + 1], self.px[i + 2]]
        })
    }

    /// Sets one pixel; a pixel outside the canvas (negative coordinates included) is ignored.
    pub fn set(&mut self, x: i64, y: i64, rgb: [u8; 3]) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        self.px[i..i + 3].copy_from_slice(&rgb);
    }

    /// Fills a rectangle, clipped to the canvas.
    pub fn fill(&mut self, x: usize, y: usize, w: usize, h: usize, rgb: [u8; 3]) {
        let (x1, y1) = ((x + w).min(self.width), (y + h).min(self.height));
        for yy in y.min(y1)..y1 {
            let row = &mut self.px[(yy * self.width + x.min(x1)) * 3..(yy * self.width + x1) * 3];
            for p in row.chunks_exact_mut(3) {
                p.copy_from_slice(&rgb);
            }
        }
    }

    /// A rectangle outline of thickness `t` inside (x, y, w, h).
    pub fn outline(&mut self, x: usize, y: usize, w: usize, h: usize, t: usize, rgb: [u8; 3]) {
        self.fill(x, y, w, t, rgb);
        self.fill(x, (y + h).saturating_sub(t), w, t, rgb);
        self.fill(x, y, t, h, rgb);
        self.fill((x + w).saturating_sub(t), y, t, h, rgb);
    }

    /// A straight line from `from` to `to` (pixel coordinates, fractions allowed) drawn as
    /// `width` x `width` squares centred on points at most half a pixel apart; clipped.
    pub fn line(&mut self, from: (f64, f64), to: (f64, f64), width: usize, rgb: [u8; 3]) {
        let (dx, dy) = (to.0 - from.0, to.1 - from.1);
        if !(dx.is_finite() && dy.is_finite() && from.0.is_finite() && from.1.is_finite()) {
            return;
        }
        // Coordinates far outside the canvas would only cost time: such a line is clipped
        // to nothing or nearly; cap the number of samples at what the canvas can show.
        let longest = dx.abs().max(dy.abs());
        let cap = 4.0 * (self.width + self.height) as f64;
        let n = (2.0 * longest).ceil().min(cap) as usize;
        for i in 0..=n {
            let t = if n == 0 { 0.0 } else { i as f64 / n as f64 };
            self.dot(from.0 + t * dx, from.1 + t * dy, width, rgb);
        }
    }

    /// A `size` x `size` square centred on (x, y); clipped.
    pub fn dot(&mut self, x: f64, y: f64, size: usize, rgb: [u8; 3]) {
        if !(x.is_finite() && y.is_finite()) {
            return;
        }
        let half = (size as f64 - 1.0) / 2.0;
        let (x0, y0) = ((x - half).round() as i64, (y - half).round() as i64);
        for yy in y0..y0 + size as i64 {
            for xx in x0..x0 + size as i64 {
                self.set(xx, yy, rgb);
            }
        }
    }

    /// Draws `s` left to right with its top-left corner at (x, y), each font pixel a
    /// `scale` x `scale` square.
    pub fn text(&mut self, x: usize, y: usize, s: &str, scale: usize, rgb: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            let gx = x + i * 4 * scale;
            for (r, bits) in glyph(ch).iter().enumerate() {
                for c in 0..3 {
                    if bits & (0b100 >> c) != 0 {
                        self.fill(gx + c * scale, y + r * scale, scale, scale, rgb);
                    }
                }
            }
        }
    }

    /// Draws `s` bottom to top (turned a quarter left), with the bottom-left corner of the
    /// turned text at (x, y): it covers `5 * scale` pixels to the right of `x` and
    /// [`text_width`] pixels above `y`.
    pub fn text_up(&mut self, x: usize, y: usize, s: &str, scale: usize, rgb: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            for (r, bits) in glyph(ch).iter().enumerate() {
                for c in 0..3 {
                    if bits & (0b100 >> c) != 0 {
                        let up = (i * 4 + c + 1) * scale;
                        if up <= y {
                            self.fill(x + r * scale, y - up, scale, scale, rgb);
                        }
                    }
                }
            }
        }
    }

    /// The canvas as PNG bytes (RGB, 8 bits per channel).
    pub fn to_png(&self) -> Result<Vec<u8>, png::EncodingError> {
        let too_large = |_| png::EncodingError::LimitsExceeded;
        let w = u32::try_from(self.width).map_err(too_large)?;
        let h = u32::try_from(self.height).map_err(too_large)?;
        let mut out = Vec::new();
        {
            let mut enc = png::Encoder::new(&mut out, w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let mut writer = enc.write_header()?;
            writer.write_image_data(&self.px)?;
            writer.finish()?;
        }
        Ok(out)
    }
}

/// Width in pixels of `s` drawn at `scale` (no trailing spacing).
pub fn text_width(s: &str, scale: usize) -> usize {
    let n = s.chars().count();
    if n == 0 {
        0
    } else {
        (n * 4 - 1) * scale
    }
}

/// Height in pixels of a line of text drawn at `scale`.
pub fn text_height(scale: usize) -> usize {
    5 * scale
}

/// A 3x5 glyph (one row per entry, bit 2 = left column). Letters are drawn upper case;
/// characters without a glyph are drawn as `?`.
pub fn glyph(ch: char) -> [u8; 5] {
    match ch.to_ascii_uppercase() {
        ' ' => [0, 0, 0, 0, 0],
        '0' => [0b111, 0b101, 0b101, 0b101, 0b111],
        '1' => [0b010, 0b110, 0b010, 0b010, 0b111],
        '2' => [0b111, 0b001, 0b111, 0b100, 0b111],
        '3' => [0b111, 0b001, 0b111, 0b001, 0b111],
        '4' => [0b101, 0b101, 0b111, 0b001, 0b001],
        '5' => [0b111, 0b100, 0b111, 0b001, 0b111],
        '6' => [0b111, 0b100, 0b111, 0b101, 0b111],
        '7' => [0b111, 0b001, 0b010, 0b010, 0b010],
        '8' => [0b111, 0b101, 0b111, 0b101, 0b111],
        '9' => [0b111, 0b101, 0b111, 0b001, 0b111],
        'A' => [0b010, 0b101, 0b111, 0b101, 0b101],
        'B' => [0b110, 0b101, 0b110, 0b101, 0b110],
        'C' => [0b011, 0b100, 0b100, 0b100, 0b011],
        'D' => [0b110, 0b101, 0b101, 0b101, 0b110],
        'E' => [0b111, 0b100, 0b110, 0b100, 0b111],
        'F' => [0b111, 0b100, 0b110, 0b100, 0b100],
        'G' => [0b011, 0b100, 0b101, 0b101, 0b011],
        'H' => [0b101, 0b101, 0b111, 0b101, 0b101],
        'I' => [0b111, 0b010, 0b010, 0b010, 0b111],
        'J' => [0b001, 0b001, 0b001, 0b101, 0b010],
        'K' => [0b101, 0b101, 0b110, 0b101, 0b101],
        'L' => [0b100, 0b100, 0b100, 0b100, 0b111],
        'M' => [0b101, 0b111, 0b111, 0b101, 0b101],
        'N' => [0b110, 0b101, 0b101, 0b101, 0b101],
        'O' => [0b010, 0b101, 0b101, 0b101, 0b010],
        'P' => [0b110, 0b101, 0b110, 0b100, 0b100],
        'Q' => [0b010, 0b101, 0b101, 0b110, 0b011],
        'R' => [0b110, 0b101, 0b110, 0b101, 0b101],
        'S' => [0b011, 0b100, 0b010, 0b001, 0b110],
        'T' => [0b111, 0b010, 0b010, 0b010, 0b010],
        'U' => [0b101, 0b101, 0b101, 0b101, 0b111],
        'V' => [0b101, 0b101, 0b101, 0b101, 0b010],
        'W' => [0b101, 0b101, 0b111, 0b111, 0b101],
        'X' => [0b101, 0b101, 0b010, 0b101, 0b101],
        'Y' => [0b101, 0b101, 0b010, 0b010, 0b010],
        'Z' => [0b111, 0b001, 0b010, 0b100, 0b111],
        '.' => [0, 0, 0, 0, 0b010],
        ',' => [0, 0, 0, 0b010, 0b100],
        ':' => [0, 0b010, 0, 0b010, 0],
        '#' => [0b101, 0b111, 0b101, 0b111, 0b101],
        '-' => [0, 0, 0b111, 0, 0],
        '_' => [0, 0, 0, 0, 0b111],
        '/' => [0b001, 0b001, 0b010, 0b100, 0b100],
        '=' => [0, 0b111, 0, 0b111, 0],
        '(' => [0b010, 0b100, 0b100, 0b100, 0b010],
        ')' => [0b010, 0b001, 0b001, 0b001, 0b010],
        '>' => [0b100, 0b010, 0b001, 0b010, 0b100],
        '<' => [0b001, 0b010, 0b100, 0b010, 0b001],
        '|' => [0b010, 0b010, 0b010, 0b010, 0b010],
        '+' => [0, 0b010, 0b111, 0b010, 0],
        '%' => [0b101, 0b001, 0b010, 0b100, 0b101],
        _ => [0b111, 0b001, 0b010, 0, 0b010],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITE: [u8; 3] = [255, 255, 255];
    const RED: [u8; 3] = [255, 0, 0];

    #[test]
    fn fill_and_set_clip_to_the_canvas() {
        let mut c = Canvas::new(4, 3, WHITE);
        c.fill(2, 1, 10, 10, RED);
        assert_eq!(c.get(1, 1), Some(WHITE));
        assert_eq!(c.get(3, 2), Some(RED));
        assert_eq!(c.get(4, 0), None);
        c.set(-1, 0, RED);
        c.set(0, 7, RED);
        assert_eq!(c.get(0, 0), Some(WHITE));
    }

    #[test]
    fn a_diagonal_line_covers_its_pixels_and_nothing_else() {
        let mut c = Canvas::new(10, 10, WHITE);
        c.line((1.0, 1.0), (8.0, 8.0), 1, RED);
        for i in 1..=8 {
            assert_eq!(c.get(i, i), Some(RED), "({i}, {i})");
        }
        assert_eq!(c.get(0, 0), Some(WHITE));
        assert_eq!(c.get(9, 9), Some(WHITE));
        assert_eq!(c.get(2, 7), Some(WHITE));
        // Far outside: clipped, and quick.
        c.line((-1e12, 5.0), (1e12, 5.0), 1, RED);
        assert_eq!(c.get(0, 5), Some(RED));
    }

    #[test]
    fn text_and_turned_text_draw_the_glyphs() {
        let mut c = Canvas::new(20, 20, WHITE);
        c.text(0, 0, "1", 1, RED);
        // '1' = 010 / 110 / 010 / 010 / 111.
        assert_eq!(c.get(1, 0), Some(RED));
        assert_eq!(c.get(0, 0), Some(WHITE));
        assert_eq!(c.get(0, 4), Some(RED));
        let mut c = Canvas::new(20, 20, WHITE);
        c.text_up(0, 10, "1", 1, RED);
        // Turned left: glyph row r is column r; glyph column c is the row c+1 above y.
        assert_eq!(c.get(0, 8), Some(RED)); // row 0, column 1
        assert_eq!(c.get(1, 9), Some(RED)); // row 1, column 0
        assert_eq!(c.get(0, 9), Some(WHITE)); // row 0, column 0
        assert_eq!(text_width("ab", 2), 14);
    }

    #[test]
    fn png_round_trips() {
        let mut c = Canvas::new(5, 3, WHITE);
        c.set(4, 2, RED);
        let bytes = c.to_png().unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (5, 3));
        assert_eq!(&buf[..info.buffer_size()], c.pixels());
    }
}
