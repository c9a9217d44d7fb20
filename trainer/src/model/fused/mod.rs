//! Fused CPU kernels for the model's element-wise and row-wise pieces.
//!
//! Written with tensor ops, each of these is several passes over its tensor
//! under autodiff, every one on a single thread in flex (which threads only
//! matmuls, softmax and reductions): the exact GELU is five ops forward and
//! more backward, layer norm a dozen. Here each is one pass forward and one
//! backward, split over rayon's threads in chunks of a fixed size (the
//! results do not depend on the thread count), with its own backward step
//! for autodiff.
//!
//! The model stays generic over any `Backend`: an op checks at run time
//! whether `B` is flex or autodiff over flex ([`Route`]) and whether the
//! tensor is f32; anything else (CUDA, half precision, other autodiff
//! strategies) takes the op's plain tensor ops, the code the fused kernel
//! replaces, unchanged.

pub mod gelu;
pub mod heads;
pub mod linear;
pub mod norm;
pub mod rotary;
pub mod softmax;

use std::any::{Any, TypeId};

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{DType, TensorMetadata};

pub use burn_flex::FlexTensor;

/// Float tensors of autodiff over flex (the crate keeps the type's name private).
pub type AdTensor = FloatTensor<Autodiff<Flex>>;

/// Where a float tensor of `B` runs a fused op.
pub enum Route<B: Backend> {
    /// `B` is flex and the tensor f32.
    Flex(FlexTensor),
    /// `B` is autodiff over flex (no checkpointing) and the tensor f32.
    Autodiff(AdTensor),
    /// Anything else: the op's plain tensor ops.
    Plain(FloatTensor<B>),
}

impl<B: Backend> Route<B> {
    pub fn of(x: FloatTensor<B>) -> Self {
        if x.dtype() != DType::F32 {
            return Route::Plain(x);
        }
        let b = TypeId::of::<B>();
        if b == TypeId::of::<Flex>() {
            Route::Flex(same(x))
        } else if b == TypeId::of::<Autodiff<Flex>>() {
            Route::Autodiff(same(x))
        } else {
            Route::Plain(x)
        }
    }
}

/// The tensor back as `B`'s, wherever it was routed.
pub fn same_route<B: Backend>(x: Route<B>) -> FloatTensor<B> {
    match x {
        Route::Flex(x) => from_flex::<B>(x),
        Route::Autodiff(x) => from_autodiff::<B>(x),
        Route::Plain(x) => x,
    }
}

/// A tensor of `B` from its float primitive.
pub fn tensor<B: Backend, const D: usize>(x: FloatTensor<B>) -> burn::tensor::Tensor<B, D> {
    burn::tensor::Tensor::from_primitive(burn::tensor::TensorPrimitive::Float(x))
}

/// A flex tensor back as `B`'s, for an op routed [`Route::Flex`].
pub fn from_flex<B: Backend>(x: FlexTensor) -> FloatTensor<B> {
    same(x)
}

/// An autodiff tensor back as `B`'s, for an op routed [`Route::Autodiff`].
pub fn from_autodiff<B: Backend>(x: AdTensor) -> FloatTensor<B> {
    same(x)
}

/// Any other primitive of `B` (a bool mask, a table) as flex's, when
/// [`Route::of`] chose flex or autodiff over flex for `B` (both keep flex's
/// primitives for everything but float tensors under autodiff).
pub fn inner_flex<T: 'static>(x: T) -> FlexTensor {
    same(x)
}

/// `x` as the type `T` it is: [`Route::of`] has compared the types.
fn same<A: 'static, T: 'static>(x: A) -> T {
    let mut slot = Some(x);
    match (&mut slot as &mut dyn Any)
        .downcast_mut::<Option<T>>()
        .and_then(Option::take)
    {
        Some(t) => t,
        None => unreachable!(
            "fused op routed a {} as a {}",
            std::any::type_name::<A>(),
            std::any::type_name::<T>()
        ),
    }
}

/// Elements per parallel task of an element-wise kernel: fixed, so that
/// the work split (and any per-chunk result) never depends on the thread count.
pub const CHUNK: usize = 1 << 14;

/// A new f32 flex tensor of `shape` holding `values`.
pub fn flex_f32(values: Vec<f32>, shape: burn::tensor::Shape) -> FlexTensor {
    FlexTensor::from_data(burn::tensor::TensorData::new(values, shape))
}
