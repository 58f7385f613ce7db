"""Running an imported NIR graph: snnTorch's network stepped over T (the independent implementation NIR exports are
checked against)."""
import snntorch.utils
import torch


def run_imported(net, x):
    """Step the snnTorch network over T, one sample at a time (NIR shapes carry no batch dim)."""
    outs = []
    with torch.no_grad():
        for n in range(x.shape[1]):
            snntorch.utils.reset(net)
            state, seq = None, []
            for t in range(x.shape[0]):
                o, state = net(x[t, n:n + 1], state)
                seq.append(o.reshape(-1))
            outs.append(torch.stack(seq))
    return torch.stack(outs, 1)  # [T, N, K]

