"""The code of the tutorial this project grew from (the Chinese blog post "pytorch-神经网络-手写数字分类任务"),
unchanged except for two things: its download-and-unpickle step and its class and function definitions are
replaced by imports from mnistkit.

    python examples/tutorial.py      # 25 epochs of the tutorial's MLP, printing the validation loss of each
"""

import torch
import torch.nn.functional as F
from matplotlib import pyplot
from torch.utils.data import DataLoader, TensorDataset

from mnistkit.tutorial import Mnist_NN, fit, get_data, get_model, load_mnist, loss_batch  # noqa: F401

x_train, y_train, x_valid, y_valid = load_mnist()  # replaces the download and pickle.load

pyplot.imshow(x_train[0].reshape((28, 28)), cmap="gray")
print(x_train.shape)

n, c = x_train.shape
x_train, x_train.shape, y_train.min(), y_train.max()
print(x_train, y_train)
print(x_train.shape)
print(y_train.min(), y_train.max())

loss_func = F.cross_entropy


def model(xb):
    return xb.mm(weights) + bias


bs = 64
xb = x_train[0:bs]  # a mini-batch from x
yb = y_train[0:bs]
weights = torch.randn([784, 10], dtype=torch.float, requires_grad=True)
bs = 64
bias = torch.zeros(10, requires_grad=True)

print(loss_func(model(xb), yb))

net = Mnist_NN()
print(net)

for name, parameter in net.named_parameters():
    print(name, parameter, parameter.size())

train_ds = TensorDataset(x_train, y_train)
train_dl = DataLoader(train_ds, batch_size=bs, shuffle=True)

valid_ds = TensorDataset(x_valid, y_valid)
valid_dl = DataLoader(valid_ds, batch_size=bs * 2)

# 三行搞定!
train_dl, valid_dl = get_data(train_ds, valid_ds, bs)
model, opt = get_model()
fit(25, model, loss_func, opt, train_dl, valid_dl)
