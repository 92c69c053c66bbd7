"""Feast feature services: versioned, model-facing bundles of features."""

from feast import FeatureService
from feature_views import user_history_features, user_onboarding_features

# Everything the user autoencoder reads. Bump the version when its inputs change.
encoder_input_v2 = FeatureService(
    name="encoder_input_v2",
    features=[user_history_features, user_onboarding_features],
    description="User autoencoder input: multi-horizon history, feedback level and polarity, onboarding.",
)
