"""Stage 02: customer features, eligibility, the three datasets and the scaled model matrix.

Modules, each importing only those above it (and the framework and domain):

- ``columns``: feature names and patterns, column roles;
- ``settings``: the config section ``prepare_features`` and its checks;
- ``aggregate``: the features from the order lines (DuckDB);
- ``eligibility``: the rules, and the eligible customers' features;
- ``transformers``: ``ClassMixEmbedding`` and ``ModelMatrixTransformer``;
- ``prepare``: ``prepare_features`` and the ``FeatureModel`` it fits (``feature-scaler.pkl``);
- ``stage``: reads the inputs, calls ``prepare_features``, writes the outputs;
- ``customer_value``: BG/NBD and Gamma-Gamma estimators (customer lifetime value).
- ``value_estimates``: the customer-value columns of every customer with a purchase, the saved
  model and its holdout check (config section ``customer_value``), from ``customer_value``'s models.
"""
