"""ESMM's probability chain: unconditional funnel probabilities from conditional ones."""

import math

import tensorflow as tf

# Largest chained probability, 1 - PROBABILITY_EPSILON. Without this bound log(1 - p) is
# -inf at p = 1 (reached in float32 once both factors are within about 6e-8 of 1), and the
# returned logit would be +inf. The bound caps the logit at log((1 - eps) / eps), about 13.8.
PROBABILITY_EPSILON = 1e-6
_LOG_MAX_PROBABILITY = math.log1p(-PROBABILITY_EPSILON)
# Below this log-probability, log1p(-exp(a)) is more accurate than log(-expm1(a)).
_LOG_ONE_HALF = -math.log(2.0)


@tf.keras.utils.register_keras_serializable(package="seqmd_tf")
class ProbabilityChain(tf.keras.layers.Layer):
  """Chains the funnel's conditional probabilities as in ESMM (Ma et al., "Entire Space
  Multi-Task Model: An Effective Approach for Estimating Post-Click Conversion Rate",
  SIGIR 2018), where pCTCVR = pCTR * pCVR.

      p_1 = sigmoid(s_1)
      p_t = p_{t-1} * sigmoid(c_t)                        t = 2..T
      logit_t = log(p_t) - log(1 - p_t)                   so sigmoid(logit_t) = p_t

  s_1 is the logit of the first task and c_t the logit of task t given task t-1. So p_t is
  the probability of reaching step t over all impressions (the entire space), and every
  loss on logit_t trains on all items.

  Numerics: log(p_t) is the sum of log_sigmoid terms, so it stays finite however small p_t
  gets, and no lower bound (which would stop the gradient) is needed. Only the upper bound
  p_t <= 1 - PROBABILITY_EPSILON is applied, for t >= 2. The first logit is returned as it
  is, and the chain multiplies the unbounded p_{t-1}.

  Call arguments:
    logits: a list of T float32 `[batch_size, list_size]` tensors: s_1, then c_2, ..., c_T.

  Returns:
    A list of T float32 `[batch_size, list_size]` tensors, logit_1 (= s_1), ..., logit_T.
  """

  def call(self, logits):
    logits = list(logits)
    outputs = [logits[0]]
    log_prob = tf.math.log_sigmoid(logits[0])
    for conditional_logits in logits[1:]:
      log_prob += tf.math.log_sigmoid(conditional_logits)
      outputs.append(log_prob_to_logit(log_prob))
    return outputs

  def compute_output_shape(self, input_shape):
    return [tf.TensorShape(shape) for shape in input_shape]


def log_prob_to_logit(log_prob: tf.Tensor) -> tf.Tensor:
  """Convert log(p) to log(p) - log(1 - p), with p bounded by 1 - PROBABILITY_EPSILON.

  Args:
    log_prob: float32 tensor of log-probabilities (<= 0), any shape.

  Returns:
    float32 tensor of the same shape, at most log((1 - eps) / eps).
  """
  log_prob = tf.minimum(log_prob, _LOG_MAX_PROBABILITY)
  # log(1 - exp(a)) computed without cancellation: expm1 near a = 0, log1p elsewhere
  # (Maechler, "Accurately Computing log(1 - exp(-|a|))", 2012). The bound above keeps both
  # branches finite, so tf.where passes no NaN gradient.
  log_one_minus_prob = tf.where(
    log_prob > _LOG_ONE_HALF,
    tf.math.log(-tf.math.expm1(log_prob)),
    tf.math.log1p(-tf.exp(log_prob)),
  )
  return log_prob - log_one_minus_prob
