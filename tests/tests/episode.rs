//! A supervision target's per-episode state: rows that start an episode take fresh parts,
//! the others keep theirs; a checkpoint stores every part by name and restores it exactly;
//! a carry in the earlier packed layout is refused with an error naming the file.

use burn::tensor::{Int, Tensor, TensorData};
use recursa_core::state::{Batch, Carry, Episode, Latents};
use recursa_core::train::checkpoint::{load_carry, save_carry};
use recursa_core::{Device, B};

fn cpu() -> Device {
    recursa_backends::device("cpu").unwrap()
}

fn ints(values: Vec<i32>, shape: [usize; 3]) -> Tensor<B, 3, Int> {
    Tensor::from_data(TensorData::new(values, shape), &cpu())
}

fn values(t: &Tensor<B, 3, Int>) -> Vec<i32> {
    t.clone()
        .into_data()
        .convert::<i32>()
        .to_vec::<i32>()
        .unwrap()
}

fn carry_with(episode: Option<Episode>) -> Carry {
    let device = cpu();
    let (rows, seq) = (2, 3);
    Carry {
        latents: Latents {
            z_h: Tensor::ones([rows, 4, 8], &device),
            z_l: Tensor::zeros([rows, 4, 8], &device),
        },
        steps: Tensor::from_data(TensorData::new(vec![1, 3], [rows]), &device),
        halted: Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0, 1], [rows]), &device)
            .equal_elem(1),
        current_data: Batch {
            inputs: Tensor::zeros([rows, seq], &device),
            labels: Tensor::ones([rows, seq], &device),
            puzzle_identifiers: Tensor::zeros([rows], &device),
        },
        preds: Tensor::zeros([rows, seq], &device),
        episode,
    }
}

#[test]
fn rows_that_restart_take_the_fresh_parts() {
    let old = Episode::default()
        .with("rank", ints(vec![0, 1, 2, 3, 4, 5], [2, 1, 3]))
        .with("tokens", ints(vec![7; 6], [2, 1, 3]));
    let fresh = Episode::default()
        .with("rank", ints(vec![10, 11, 12, 13, 14, 15], [2, 1, 3]))
        .with("tokens", ints(vec![9; 6], [2, 1, 3]));
    let take =
        Tensor::<B, 1, Int>::from_data(TensorData::new(vec![0, 1], [2]), &cpu()).equal_elem(1);
    let new = old.replace_rows(&take, &fresh);
    assert_eq!(values(new.get("rank").unwrap()), [0, 1, 2, 13, 14, 15]);
    assert_eq!(values(new.get("tokens").unwrap()), [7, 7, 7, 9, 9, 9]);
    assert!(new.get("path").is_none());
    // A part added again replaces the first.
    let twice = Episode::default()
        .with("path", ints(vec![1; 6], [2, 1, 3]))
        .with("path", ints(vec![2; 6], [2, 1, 3]));
    assert_eq!(twice.parts().len(), 1);
    assert_eq!(values(twice.get("path").unwrap()), [2; 6]);
}

#[test]
fn a_checkpoint_keeps_every_part_by_name() {
    let dir = std::env::temp_dir().join(format!("recursa-episode-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("carry-0.safetensors");
    let episode = Episode::default()
        .with("tokens", ints(vec![5, 6, 7, 8, 9, 10], [2, 1, 3]))
        .with("rank", ints(vec![2, 0, 1, 1, 2, 0], [2, 1, 3]));
    save_carry(&carry_with(Some(episode)), &path).unwrap();
    let back = load_carry(&path, &cpu()).unwrap();
    let e = back.episode.expect("the episode came back");
    assert_eq!(e.parts().len(), 2);
    assert_eq!(values(e.get("rank").unwrap()), [2, 0, 1, 1, 2, 0]);
    assert_eq!(values(e.get("tokens").unwrap()), [5, 6, 7, 8, 9, 10]);
    // Without a per-episode state there is none after loading either.
    save_carry(&carry_with(None), &path).unwrap();
    assert!(load_carry(&path, &cpu()).unwrap().episode.is_none());

    // The earlier layout: one packed `episode` tensor.
    let packed: Vec<u8> = [0i32; 12].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![2, 2, 3], &packed)
            .unwrap();
    let mut tensors = vec![("episode".to_string(), view)];
    let other = {
        save_carry(&carry_with(None), &path).unwrap();
        std::fs::read(&path).unwrap()
    };
    let st = safetensors::SafeTensors::deserialize(&other).unwrap();
    for (name, t) in st.tensors() {
        tensors.push((name, t));
    }
    let bytes = safetensors::serialize(tensors, &None).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let e = load_carry(&path, &cpu()).unwrap_err().to_string();
    assert!(
        e.contains("carry-0.safetensors") && e.contains("`episode`"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
