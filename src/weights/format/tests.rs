#[cfg(test)]
mod canonical_tests {
    use super::super::*;

    #[test]
    fn the_same_tensors_give_the_same_bytes() {
        let config = SegClipConfig::tiny();
        let mut tensors = BTreeMap::new();
        tensors.insert("a.weight".to_string(), HostTensor::new(vec![2, 3], vec![0.5, -1.0, 2.0, 3.0, 0.25, -0.75]));
        tensors.insert("b.bias".to_string(), HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]));
        let first = write(&config, "abc", StorageDtype::Int8, &tensors).unwrap();
        for _ in 0..8 {
            assert_eq!(write(&config, "abc", StorageDtype::Int8, &tensors).unwrap(), first);
        }
        let file = read(&first).unwrap();
        assert_eq!(file.tensors["b.bias"].data, vec![1.0, 2.0, 3.0]);
    }

    /// The planned writer gives the bytes `safetensors::serialize` gives for the same tensors,
    /// with the header's keys sorted (how files were written before the plan existed, so their
    /// manifest hashes stay reproducible).
    #[test]
    fn the_planned_layout_is_safetensors_own_with_sorted_keys() {
        use safetensors::tensor::TensorView;
        let config = SegClipConfig::tiny();
        let mut tensors = BTreeMap::new();
        let big: Vec<f32> = (0..2048).map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0).collect();
        tensors.insert("z.mlp.weight".to_string(), HostTensor::new(vec![32, 64], big.clone()));
        tensors.insert("a.weight".to_string(), HostTensor::new(vec![64, 32], big));
        tensors.insert("b.bias".to_string(), HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]));
        let ours = write(&config, "abc", StorageDtype::Int8, &tensors).unwrap();

        let mut entries: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in &tensors {
            match int8_channel_axes(name, &t.shape) {
                Some(axes) => {
                    let q = quant::quantize_int8(&t.data, &t.shape, &axes);
                    entries.push((name.clone(), Dtype::I8, t.shape.clone(), q.values.iter().map(|&v| v as u8).collect()));
                    let scales = q.scales.iter().flat_map(|v| v.to_le_bytes()).collect();
                    entries.push((format!("{name}{SCALE_SUFFIX}"), Dtype::F32, q.scale_shape, scales));
                }
                None => entries.push((name.clone(), Dtype::F32, t.shape.clone(), t.data.iter().flat_map(|v| v.to_le_bytes()).collect())),
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hasher = Sha256::new();
        entries.iter().for_each(|e| hasher.update(&e.3));
        let header = FileHeader { config: &config, dense: None, background_prompts: &[], tokenizer_sha256: "abc", dtype: StorageDtype::Int8 };
        let mut metadata: HashMap<String, String> = header.metadata().into_iter().collect();
        metadata.insert("data_sha256".into(), hex(&hasher.finalize()));
        let views = entries.iter().map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()));
        let mut theirs = safetensors::serialize(views, Some(metadata)).unwrap();
        // Their header with its keys sorted, same length and padding.
        let n = u64::from_le_bytes(theirs[..8].try_into().unwrap()) as usize;
        let sorted = serde_json::from_slice::<serde_json::Value>(&theirs[8..8 + n]).unwrap().to_string().into_bytes();
        theirs[8..8 + sorted.len()].copy_from_slice(&sorted);
        theirs[8 + sorted.len()..8 + n].fill(b' ');
        assert_eq!(ours, theirs);
    }
}

#[cfg(test)]
/// Optional header fields: `dense` and `background_prompts`.
mod header_tests {
    use super::super::*;
    use crate::model::dense::{DenseMethod, DenseProtocol};

    fn tensors() -> BTreeMap<String, HostTensor> {
        BTreeMap::from([("b.bias".to_string(), HostTensor::new(vec![3], vec![1.0, 2.0, 3.0]))])
    }

    #[test]
    fn a_dense_file_keeps_its_protocol_and_a_segclip_file_has_none() {
        let protocol = DenseProtocol::for_method(DenseMethod::Naclip);
        let bytes = write_dense(&SegClipConfig::tiny(), &protocol, "abc", StorageDtype::F32, &tensors()).unwrap();
        assert_eq!(read(&bytes).unwrap().dense, Some(protocol));
        let plain = write(&SegClipConfig::tiny(), "abc", StorageDtype::F32, &tensors()).unwrap();
        assert_eq!(read(&plain).unwrap().dense, None);
    }

    #[test]
    fn a_bad_protocol_is_named_by_its_field() {
        let protocol = DenseProtocol { bg_thresh: 1.5, ..DenseProtocol::for_method(DenseMethod::Clearclip) };
        let bytes = write_dense(&SegClipConfig::tiny(), &protocol, "abc", StorageDtype::F32, &tensors()).unwrap();
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("'dense'") && err.contains("bg_thresh must be in [0, 1], found 1.5"), "{err}");
    }

    #[test]
    fn background_prompts_travel_with_the_file() {
        let prompts = vec!["striped background".to_string(), "plain background".to_string()];
        let bytes = write_with_background(&SegClipConfig::tiny(), &prompts, "abc", StorageDtype::Int8, &tensors()).unwrap();
        assert_eq!(read(&bytes).unwrap().background_prompts, prompts);
        let plain = write(&SegClipConfig::tiny(), "abc", StorageDtype::Int8, &tensors()).unwrap();
        assert!(read(&plain).unwrap().background_prompts.is_empty());
        assert!(!String::from_utf8_lossy(&plain).contains("background_prompts"));
    }

    #[test]
    fn an_empty_background_prompt_is_named_by_its_field() {
        let bytes = write_with_background(&SegClipConfig::tiny(), &[" ".to_string()], "abc", StorageDtype::F32, &tensors()).unwrap();
        let err = read(&bytes).unwrap_err().to_string();
        assert!(err.contains("'background_prompts'") && err.contains("is empty"), "{err}");
    }
}
