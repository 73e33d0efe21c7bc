//! The names retired by the `Mlp` → `Network` rename still compile for old callers, as
//! deprecated aliases of the one type (not copies of it).
#![allow(deprecated)]

use std::any::TypeId;

use blindspot::nn::{Mlp, MlpWorkspace, Network, Workspace};

#[test]
fn old_names_are_the_same_types() {
    assert_eq!(TypeId::of::<Mlp>(), TypeId::of::<Network>());
    assert_eq!(TypeId::of::<MlpWorkspace>(), TypeId::of::<Workspace>());
}
