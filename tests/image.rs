//! PNG grids: geometry, gray mapping and errors, checked by decoding the written file.

use blindspot::image::{save_gray_png, Grid};
use blindspot::Error;
use ndarray::{array, Array1};

mod common;
use common::TempDir;

/// Decodes an 8-bit grayscale PNG into (width, height, pixels).
fn decode(path: &std::path::Path) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

#[test]
fn grid_round_trips_through_png() {
    let dir = TempDir::new("image-grid");
    let path = dir.0.join("grid.png");
    // 2×3 tiles, 2 per row, 3 tiles → 2 rows of tiles, the last cell empty.
    let mut grid = Grid::new(2, 3, 2).unwrap();
    grid.push(array![0.0, 0.5, 1.0, 2.0, -1.0, 0.2].view())
        .unwrap();
    grid.push_perturbation(array![0.0, 1.0, -1.0, 0.5, -0.5, 0.0].view())
        .unwrap();
    grid.push_perturbation(Array1::zeros(6).view()).unwrap();
    assert_eq!(grid.len(), 3);
    grid.save(&path).unwrap();

    let (w, h, px) = decode(&path);
    assert_eq!((w, h), (2 * 3 + 1, 2 * 2 + 1));
    assert_eq!((w, h), grid.dimensions());
    let at = |x: usize, y: usize| px[y * w + x];
    // Tile 0 at (0, 0): values clamped to [0, 1], 0.5 → 128 (rounded half up).
    assert_eq!(
        [at(0, 0), at(1, 0), at(2, 0), at(0, 1), at(1, 1), at(2, 1)],
        [0, 128, 255, 255, 0, 51]
    );
    // Vertical separator column and horizontal separator row are white.
    assert!((0..h).all(|y| at(3, y) == 255));
    assert!((0..w).all(|x| at(x, 2) == 255));
    // Tile 1 at (4, 0): perturbation, 0 → mid-gray, ±max → white/black.
    assert_eq!(
        [at(4, 0), at(5, 0), at(6, 0), at(4, 1), at(5, 1), at(6, 1)],
        [128, 255, 0, 191, 64, 128]
    );
    // Tile 2 at (0, 3): all-zero perturbation is uniformly mid-gray.
    assert!((3..5).all(|y| (0..3).all(|x| at(x, y) == 128)));
    // The unused cell is filled with the separator color.
    assert!((3..5).all(|y| (4..7).all(|x| at(x, y) == 255)));
    // Nothing but the PNG is left in the directory (the temporary file was renamed).
    assert_eq!(std::fs::read_dir(&dir.0).unwrap().count(), 1);
}

#[test]
fn perturbation_is_magnified_by_its_largest_magnitude() {
    let dir = TempDir::new("image-magnify");
    let path = dir.0.join("p.png");
    let mut grid = Grid::new(1, 3, 3).unwrap();
    // Tiny values, as adversarial perturbations are: still drawn at full contrast.
    grid.push_perturbation(array![0.0, 0.001, -0.002].view())
        .unwrap();
    grid.save(&path).unwrap();
    let (_, _, px) = decode(&path);
    assert_eq!(px, vec![128, 191, 0]);
}

#[test]
fn scale_magnifies_tiles_but_not_separators() {
    let dir = TempDir::new("image-scale");
    let path = dir.0.join("s.png");
    let mut grid = Grid::new(1, 2, 2)
        .unwrap()
        .try_with_scale(3)
        .unwrap()
        .with_separator(7);
    grid.push(array![0.0, 1.0].view()).unwrap();
    grid.push(array![1.0, 0.0].view()).unwrap();
    grid.save(&path).unwrap();
    let (w, h, px) = decode(&path);
    assert_eq!((w, h), (2 * 2 * 3 + 1, 3));
    for y in 0..3 {
        let row = &px[y * w..(y + 1) * w];
        assert_eq!(row, &[0, 0, 0, 255, 255, 255, 7, 255, 255, 255, 0, 0, 0]);
    }
}

#[test]
fn grid_errors_are_typed() {
    assert!(matches!(
        Grid::new(0, 2, 2),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(matches!(
        Grid::new(2, 2, 0),
        Err(Error::InvalidParameter { .. })
    ));
    let grid = Grid::new(2, 2, 2).unwrap();
    assert!(matches!(
        grid.clone().try_with_scale(0),
        Err(Error::InvalidParameter { .. })
    ));

    let mut grid = grid;
    assert!(matches!(
        grid.push(array![0.0, 0.0, 0.0].view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        grid.push(array![0.0, f32::NAN, 0.0, 0.0].view()),
        Err(Error::NonFinite { .. })
    ));
    assert!(matches!(
        grid.push_perturbation(array![0.0, 0.0, 0.0, 0.0, 0.0].view()),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        grid.push_perturbation(array![0.0, f32::NAN, 0.0, 0.0].view()),
        Err(Error::NonFinite { .. })
    ));
    assert!(grid.is_empty(), "rejected tiles are not added");

    let dir = TempDir::new("image-errors");
    let path = dir.0.join("empty.png");
    assert!(matches!(
        grid.save(&path),
        Err(Error::InvalidParameter { .. })
    ));
    assert!(!path.exists());
    // A directory that does not exist: an I/O error naming the path, no stray files.
    let bad = dir.0.join("no-such-dir").join("x.png");
    grid.push(array![0.0, 0.0, 0.0, 0.0].view()).unwrap();
    match grid.save(&bad) {
        Err(Error::Io { path, .. }) => assert_eq!(path, bad),
        other => panic!("expected Io error, got {other:?}"),
    }
}

#[test]
fn save_gray_png_writes_exact_pixels() {
    let dir = TempDir::new("image-gray");
    let path = dir.0.join("g.png");
    let pixels: Vec<u8> = (0..12).map(|i| i * 20).collect();
    save_gray_png(&path, 4, 3, &pixels).unwrap();
    assert_eq!(decode(&path), (4, 3, pixels.clone()));
    // Overwriting an existing file works (rename over it).
    save_gray_png(&path, 3, 4, &pixels).unwrap();
    assert_eq!(decode(&path).0, 3);
    assert!(matches!(
        save_gray_png(&path, 4, 4, &pixels),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        save_gray_png(&path, 0, 3, &[]),
        Err(Error::InvalidParameter { .. })
    ));
}
