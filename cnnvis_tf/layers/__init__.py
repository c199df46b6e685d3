"""Custom Keras objects of cnnvis_tf, registered serializable under package "cnnvis_tf".

Importing this package registers them, so ``keras.models.load_model`` finds them after
``import cnnvis_tf``.
"""
